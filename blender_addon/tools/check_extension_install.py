"""Installs the extension zip into a throw-away Blender user folder with headless ``bpy`` and enables it.

    BLENDER_USER_EXTENSIONS=/tmp/x/ext BLENDER_USER_CONFIG=/tmp/x/cfg python3 check_extension_install.py ZIP

Any ``director_link`` already importable (e.g. a developer's editable install) is hidden first, so the add-on can
only work if Blender installed the bundled wheel. Prints one ``ok: …`` line per check; exits 1 on the first failure.
"""

from __future__ import annotations

import importlib.util
import sys


def main(zip_path: str) -> int:
    hidden = []
    for entry in list(sys.path):
        spec_path = entry.rstrip("/") + "/director_link/__init__.py"
        try:
            open(spec_path).close()
        except OSError:
            continue
        sys.path.remove(entry)
        hidden.append(entry)
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    if importlib.util.find_spec("director_link") is not None:
        print("fail: director_link is still importable before the install")
        return 1
    print(f"ok: director_link hidden ({', '.join(hidden) or 'was not installed'})")

    import bpy

    addon_utils = importlib.import_module("addon_utils")  # importable once bpy is

    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    if result != {"FINISHED"}:
        print(f"fail: install returned {result}")
        return 1
    names = [m for m in sys.modules if m.startswith("bl_ext.") and m.endswith(".movie_director")]
    if not names:
        print("fail: the extension was not enabled")
        return 1
    import director_link

    print(f"ok: enabled {names[0]}; director_link {director_link.__version__} from {director_link.__file__}")
    if "/.local/lib/" not in director_link.__file__:
        print("fail: director_link did not come from the wheel Blender installed")
        return 1
    module = sys.modules[names[0]]
    hub = module.hub()
    if hub is None or hub.closed:
        print("fail: no hub")
        return 1
    print(f"ok: hub {hub!r}; preferences key {names[0] in bpy.context.preferences.addons}")
    addon_utils.disable(names[0], default_set=True)
    if module.hub() is not None or not hub.closed:
        print("fail: disabling left the hub open")
        return 1
    print("ok: disabled, hub closed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
