#!/usr/bin/env bash
# Installs the real servers the backend tests run against, each pinned and in its own venv, and exports where
# their Pythons are:
#   DIRECTOR_LINK_LITELLM_PYTHON   litellm[proxy]==1.106.2 (+ prisma, which its auth-error path imports)
#   DIRECTOR_LINK_GRADIO6_PYTHON   gradio==6.31.0 (the newest Gradio; + requests)
#   DIRECTOR_LINK_GRADIO5_PYTHON   gradio==5.29.0 (the version Wan2GP pins; + requests, which it imports)
#   DIRECTOR_LINK_GRADIO3_PYTHON   gradio==3.50.2 (the 3.x family of RVC WebUI and AudioLDM; with the FastAPI,
#                                  Pydantic and httpx of its day: newer Starlette breaks its page and so its launch)
#   DIRECTOR_LINK_MCP_PYTHON       mcp==1.10.1 (what WanGP's MCP mode pins; its FastMCP needs Pydantic < 2.12)
#
#   source .ci/backends.sh         # from .ci/run: installs (or reuses) and exports the variables
#   bash .ci/backends.sh           # installs and prints the export lines
#
# Venvs live in $DIRECTOR_LINK_VENVS (default ~/.cache/director-link/venvs) and are reused while their pins are
# unchanged (a stamp file per venv). Installs use uv (itself from PyPI, in a venv of its own) when it can be had,
# else pip; the venvs install in parallel. Nothing is installed into the calling Python.
_dl_backends() {
    local root="${DIRECTOR_LINK_VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/director-link/venvs}"
    local py="${DIRECTOR_LINK_BASE_PYTHON:-python3}"
    local started=$SECONDS
    mkdir -p "$root" || return 1

    local installer=pip
    if [ ! -x "$root/uv/bin/uv" ]; then
        "$py" -m venv "$root/uv" >/dev/null 2>&1 &&
            "$root/uv/bin/python" -m pip install -q --disable-pip-version-check 'uv==0.9.*' >/dev/null 2>&1 ||
            rm -rf "$root/uv"
    fi
    [ -x "$root/uv/bin/uv" ] && installer=uv

    # name|pins
    local specs=(
        "litellm|litellm[proxy]==1.106.2 prisma>=0.11,<1"
        "gradio6|gradio==6.31.0 requests"
        "gradio5|gradio==5.29.0 requests"
        "gradio3|gradio==3.50.2 fastapi==0.104.1 pydantic==2.5.3 httpx<0.28 requests"
        "mcp|mcp==1.10.1 pydantic>=2.7,<2.12"
    )
    local spec name pins venv pids=() names=()
    for spec in "${specs[@]}"; do
        name="${spec%%|*}"
        pins="${spec#*|}"
        venv="$root/$name"
        if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.director-link-pins" 2>/dev/null)" = "$pins" ]; then
            echo "backends: $name reused ($pins)"
            continue
        fi
        (
            local t0=$SECONDS
            rm -rf "$venv"
            # shellcheck disable=SC2086  # pins are words on purpose
            if [ "$installer" = uv ]; then
                "$root/uv/bin/uv" venv -q --python "$py" "$venv" &&
                    "$root/uv/bin/uv" pip install -q --python "$venv/bin/python" $pins
            else
                "$py" -m venv "$venv" &&
                    "$venv/bin/python" -m pip install -q --disable-pip-version-check $pins
            fi >"$root/$name.log" 2>&1 || { echo "backends: $name FAILED (see $root/$name.log)"; exit 1; }
            echo "$pins" >"$venv/.director-link-pins"
            echo "backends: $name installed with $installer in $((SECONDS - t0)) s ($pins)"
        ) &
        pids+=($!)
        names+=("$name")
    done
    local i failed=0
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed=1
    done

    [ -x "$root/litellm/bin/python" ] && export DIRECTOR_LINK_LITELLM_PYTHON="$root/litellm/bin/python"
    [ -x "$root/gradio6/bin/python" ] && export DIRECTOR_LINK_GRADIO6_PYTHON="$root/gradio6/bin/python"
    [ -x "$root/gradio5/bin/python" ] && export DIRECTOR_LINK_GRADIO5_PYTHON="$root/gradio5/bin/python"
    [ -x "$root/gradio3/bin/python" ] && export DIRECTOR_LINK_GRADIO3_PYTHON="$root/gradio3/bin/python"
    [ -x "$root/mcp/bin/python" ] && export DIRECTOR_LINK_MCP_PYTHON="$root/mcp/bin/python"
    echo "backends: ready in $((SECONDS - started)) s (venvs in $root, installer $installer)"
    return $failed
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -uo pipefail
    _dl_backends
    rc=$?
    for v in DIRECTOR_LINK_LITELLM_PYTHON DIRECTOR_LINK_GRADIO6_PYTHON DIRECTOR_LINK_GRADIO5_PYTHON DIRECTOR_LINK_GRADIO3_PYTHON DIRECTOR_LINK_MCP_PYTHON; do
        [ -n "${!v:-}" ] && echo "export $v=${!v}"
    done
    exit $rc
else
    _dl_backends
fi
