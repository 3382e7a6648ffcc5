//! The node classes the simulator really runs: core image nodes on small float images and the four
//! acceptance nodes (`fixtures/comfyui/tools/custom_nodes_acceptance`), behaving like their Python originals.
//! Model nodes (loaders, text encoders, samplers, VAE, ControlNet, upscalers, LTX-Video) are cheap stand-ins in
//! [`super::models`].
use super::exec::{Failure, NodeCtx, Preview};
use super::image::{self, Images, Masks, MAX_PIXELS};
use super::models::{self, Opaque};
use super::pyjson;
use super::validate::annotated_path;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A value flowing between nodes.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// A missing upstream value (`None` in Python).
    None,
    /// A literal from the prompt (already coerced by validation).
    Json(Value),
    Image(Arc<Images>),
    Mask(Arc<Masks>),
    Int(i64),
    Str(String),
    /// A model handle, conditioning, latent, sampler or sigmas of the model stand-ins.
    Opaque(Arc<Opaque>),
}

/// A node's inputs by name, in prompt order.
#[derive(Default, Debug)]
pub(crate) struct Args {
    items: Vec<(String, Val)>,
}

impl Args {
    pub fn set(&mut self, name: &str, v: Val) {
        match self.items.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.items.push((name.to_string(), v)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Val)> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn get(&self, name: &str) -> Option<&Val> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub(super) fn missing(name: &str) -> Failure {
        Failure::new(
            "TypeError",
            format!("run() missing 1 required positional argument: '{name}'"),
        )
    }

    pub(super) fn f64(&self, name: &str) -> Result<f64, Failure> {
        match self.get(name) {
            Some(Val::Json(Value::Number(n))) => Ok(n.as_f64().unwrap_or(0.0)),
            Some(Val::Json(Value::Bool(b))) => Ok(f64::from(u8::from(*b))),
            Some(Val::Int(i)) => Ok(*i as f64),
            Some(other) => Err(Failure::new(
                "TypeError",
                format!("'{name}' must be a number, not {}", kind_of(other)),
            )),
            None => Err(Self::missing(name)),
        }
    }

    pub(super) fn i64(&self, name: &str) -> Result<i64, Failure> {
        self.f64(name).map(|f| f as i64)
    }

    pub(super) fn string(&self, name: &str) -> Result<String, Failure> {
        match self.get(name) {
            Some(Val::Json(v)) => Ok(pyjson::py_str(v)),
            Some(Val::Str(s)) => Ok(s.clone()),
            Some(Val::Int(i)) => Ok(i.to_string()),
            Some(other) => Err(Failure::new(
                "TypeError",
                format!("'{name}' must be a string, not {}", kind_of(other)),
            )),
            None => Err(Self::missing(name)),
        }
    }

    pub(super) fn bool(&self, name: &str) -> Result<bool, Failure> {
        match self.get(name) {
            Some(Val::Json(Value::Bool(b))) => Ok(*b),
            Some(_) => Ok(self.f64(name).map(|f| f != 0.0).unwrap_or(true)),
            None => Err(Self::missing(name)),
        }
    }

    pub(super) fn image(&self, name: &str) -> Result<Arc<Images>, Failure> {
        match self.get(name) {
            Some(Val::Image(img)) => Ok(img.clone()),
            Some(other) => Err(Failure::new(
                "AttributeError",
                format!("'{}' object has no attribute 'shape'", kind_of(other)),
            )),
            None => Err(Self::missing(name)),
        }
    }
}

pub(super) fn kind_of(v: &Val) -> &'static str {
    match v {
        Val::None => "NoneType",
        Val::Json(j) => pyjson::type_name(j),
        Val::Image(_) | Val::Mask(_) => "Tensor",
        Val::Int(_) => "int",
        Val::Str(_) => "str",
        Val::Opaque(o) => o.py_type(),
    }
}

pub(crate) struct NodeResult {
    pub outputs: Vec<Val>,
    pub ui: Option<Map<String, Value>>,
}

pub(super) fn out(values: Vec<Val>) -> Result<NodeResult, Failure> {
    Ok(NodeResult {
        outputs: values,
        ui: None,
    })
}

pub(super) fn ui_only(ui: Value) -> Result<NodeResult, Failure> {
    Ok(NodeResult {
        outputs: Vec::new(),
        ui: ui.as_object().cloned(),
    })
}

pub(super) fn check_size(w: u32, h: u32, batch: u32) -> Result<(), Failure> {
    if w as u64 * h as u64 * batch.max(1) as u64 > MAX_PIXELS {
        return Err(Failure::new(
            "RuntimeError",
            format!("the Director Link simulator refuses images this large ({w}x{h}x{batch})"),
        ));
    }
    Ok(())
}

pub(super) fn clamp_u32(v: i64) -> u32 {
    v.clamp(0, u32::MAX as i64) as u32
}

/// Runs one node class.
pub(crate) async fn run(class: &str, args: &Args, ctx: &NodeCtx<'_>) -> Result<NodeResult, Failure> {
    match class {
        "EmptyImage" => {
            let (w, h, b) = (
                clamp_u32(args.i64("width")?),
                clamp_u32(args.i64("height")?),
                clamp_u32(args.i64("batch_size")?),
            );
            check_size(w, h, b)?;
            let c = args.i64("color")?;
            let rgb = [
                ((c >> 16) & 0xff) as f32 / 255.0,
                ((c >> 8) & 0xff) as f32 / 255.0,
                (c & 0xff) as f32 / 255.0,
            ];
            out(vec![Val::Image(Arc::new(Images::solid(w, h, b, rgb)))])
        }
        "ImageInvert" => {
            let img = args.image("image")?;
            out(vec![Val::Image(Arc::new(
                img.map(|f| f.iter().map(|v| 1.0 - v).collect()),
            ))])
        }
        "ImageScale" => image_scale(args),
        "ImageBlur" => {
            let img = args.image("image")?;
            let radius = clamp_u32(args.i64("blur_radius")?).min(31);
            let sigma = args.f64("sigma")? as f32;
            out(vec![Val::Image(Arc::new(
                img.map(|f| image::blur(f, img.w, img.h, radius, sigma)),
            ))])
        }
        "SaveImage" => {
            let prefix = args.string("filename_prefix").unwrap_or_else(|_| "ComfyUI".into());
            save_images(ctx, args, &prefix, "", &ctx.shared().dirs.output, "output")
        }
        "PreviewImage" => save_images(ctx, args, "ComfyUI", &ctx.temp_prefix, &ctx.shared().dirs.temp, "temp"),
        "SaveAnimatedWEBP" | "SaveAnimatedPNG" => save_animated(ctx, args, class == "SaveAnimatedWEBP"),
        "SaveImageWebsocket" => {
            let img = args.image("images")?;
            let total = img.frames.len() as f64;
            for (step, frame) in img.frames.iter().enumerate() {
                let preview = Preview {
                    png: true,
                    w: img.w,
                    h: img.h,
                    rgb: frame.clone(),
                    max_size: None,
                };
                ctx.progress(step as f64, total, Some(preview)).await?;
            }
            ui_only(json!({}))
        }
        "LoadImage" => load_image(ctx, args),
        "LoadImageMask" => load_image_mask(ctx, args),
        "GetImageSize" => {
            let img = args.image("image")?;
            let b = img.frames.len();
            ctx.progress_text(&format!("width: {}, height: {}\n batch size: {b}", img.w, img.h));
            out(vec![Val::Int(img.w as i64), Val::Int(img.h as i64), Val::Int(b as i64)])
        }
        "PreviewAny" => {
            let text = match args.get("source") {
                None | Some(Val::None) => "None".to_string(),
                Some(Val::Json(Value::String(s))) | Some(Val::Str(s)) => s.clone(),
                Some(Val::Json(v @ (Value::Number(_) | Value::Bool(_)))) => pyjson::py_str(v),
                Some(Val::Json(v)) => pyjson::dumps(v),
                Some(Val::Int(i)) => i.to_string(),
                Some(Val::Image(img)) => img.describe(),
                Some(Val::Mask(m)) => m.describe(),
                Some(Val::Opaque(o)) => o.describe(),
            };
            ui_only(json!({"text": [text]}))
        }
        "PrimitiveInt" | "PrimitiveFloat" | "PrimitiveString" | "PrimitiveBoolean" => {
            out(vec![args.get("value").cloned().unwrap_or(Val::None)])
        }
        "AcceptanceProgress" => acceptance_progress(ctx, args).await,
        "AcceptanceFail" => {
            let message = args.string("message")?;
            let steps = args.i64("steps_before_failing")?.clamp(0, 100);
            if steps > 0 {
                for i in 0..steps {
                    ctx.sleep(0.05).await;
                    ctx.progress((i + 1) as f64, (steps + 1) as f64, None).await?;
                }
            }
            Err(Failure::Error {
                kind: "RuntimeError".into(),
                traceback: vec![
                    "  File \"director_link/sim/nodes.rs\", line 1, in run\n    raise RuntimeError(message)\n".into(),
                ],
                message,
            })
        }
        "AcceptanceSlow" => acceptance_slow(ctx, args).await,
        "AcceptanceText" => {
            let text = args.string("text")?;
            Ok(NodeResult {
                outputs: vec![Val::Str(text.clone())],
                ui: json!({"text": [text]}).as_object().cloned(),
            })
        }
        other => match models::run(other, args, ctx).await {
            Some(result) => result,
            None => Err(Failure::new(
                "NotImplementedError",
                format!("the Director Link simulator does not implement the node class {other}"),
            )),
        },
    }
}

fn image_scale(args: &Args) -> Result<NodeResult, Failure> {
    let img = args.image("image")?;
    let (mut w, mut h) = (clamp_u32(args.i64("width")?), clamp_u32(args.i64("height")?));
    if w == 0 && h == 0 {
        return out(vec![Val::Image(img)]);
    }
    if w == 0 {
        w = ((img.w as f64 * h as f64 / img.h.max(1) as f64).round() as u32).max(1);
    } else if h == 0 {
        h = ((img.h as f64 * w as f64 / img.w.max(1) as f64).round() as u32).max(1);
    }
    check_size(w, h, img.frames.len() as u32)?;
    let center = args.string("crop").map(|c| c == "center").unwrap_or(false);
    let frames = img
        .frames
        .iter()
        .map(|f| {
            let (src, sw, sh) = if center {
                center_crop(f, img.w, img.h, w, h)
            } else {
                (f.clone(), img.w, img.h)
            };
            image::resize(&src, sw, sh, 3, w, h)
        })
        .collect();
    out(vec![Val::Image(Arc::new(Images { w, h, frames }))])
}

/// `common_upscale(..., crop="center")`: crop to the target aspect before scaling.
fn center_crop(f: &[f32], w: u32, h: u32, tw: u32, th: u32) -> (Vec<f32>, u32, u32) {
    let old = w as f64 / h.max(1) as f64;
    let new = tw as f64 / th.max(1) as f64;
    let (mut x0, mut y0, mut cw, mut ch) = (0u32, 0u32, w, h);
    if old > new {
        cw = ((w as f64 * new / old).round() as u32).clamp(1, w);
        x0 = (w - cw) / 2;
    } else if old < new {
        ch = ((h as f64 * old / new).round() as u32).clamp(1, h);
        y0 = (h - ch) / 2;
    }
    let mut outv = Vec::with_capacity(cw as usize * ch as usize * 3);
    for y in y0..y0 + ch {
        let start = ((y * w + x0) * 3) as usize;
        outv.extend_from_slice(&f[start..start + cw as usize * 3]);
    }
    (outv, cw, ch)
}

/// `folder_paths.get_save_image_path`: `(folder, filename, counter, subfolder)`.
fn save_path(prefix: &str, root: &Path, w: u32, h: u32) -> Result<(PathBuf, String, u32, String), Failure> {
    let prefix = if prefix.contains('%') {
        let now = super::http::civil_now();
        prefix
            .replace("%width%", &w.to_string())
            .replace("%height%", &h.to_string())
            .replace("%year%", &now.0.to_string())
            .replace("%month%", &format!("{:02}", now.1))
            .replace("%day%", &format!("{:02}", now.2))
            .replace("%hour%", &format!("{:02}", now.3))
            .replace("%minute%", &format!("{:02}", now.4))
            .replace("%second%", &format!("{:02}", now.5))
    } else {
        prefix.to_string()
    };
    let (subfolder, filename) = match prefix.rsplit_once('/') {
        Some((dir, name)) => (dir.trim_matches('/').to_string(), name.to_string()),
        None => (String::new(), prefix.clone()),
    };
    let folder = if subfolder.is_empty() {
        Some(root.to_path_buf())
    } else {
        super::validate::join_inside(root, &subfolder)
    };
    let Some(folder) = folder else {
        return Err(Failure::new(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed.",
        ));
    };
    std::fs::create_dir_all(&folder).map_err(|e| Failure::new("OSError", e.to_string()))?;
    let mut counter = 0u32;
    if let Ok(entries) = std::fs::read_dir(&folder) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `<filename>_<digits>_...`: the highest counter wins.
            let Some(rest) = name.strip_prefix(&filename).and_then(|r| r.strip_prefix('_')) else {
                continue;
            };
            let digits: u32 = rest.split('_').next().and_then(|d| d.parse().ok()).unwrap_or(0);
            counter = counter.max(digits);
        }
    }
    Ok((folder, filename, counter + 1, subfolder))
}

fn png_texts(ctx: &NodeCtx<'_>) -> Vec<(String, String)> {
    let mut texts = vec![(
        "prompt".to_string(),
        pyjson::dumps(&Value::Object(ctx.prompt().clone())),
    )];
    if let Some(Value::Object(info)) = ctx.extra_data().get("extra_pnginfo") {
        for (k, v) in info {
            texts.push((k.clone(), pyjson::dumps(v)));
        }
    }
    texts
}

fn save_images(
    ctx: &NodeCtx<'_>,
    args: &Args,
    prefix: &str,
    append: &str,
    root: &Path,
    kind: &str,
) -> Result<NodeResult, Failure> {
    let img = args.image("images")?;
    let (folder, filename, mut counter, subfolder) = save_path(&format!("{prefix}{append}"), root, img.w, img.h)?;
    let texts = if kind == "output" { png_texts(ctx) } else { Vec::new() };
    let mut results = Vec::new();
    for (batch, frame) in img.frames.iter().enumerate() {
        let name = format!(
            "{}_{counter:05}_.png",
            filename.replace("%batch_num%", &batch.to_string())
        );
        let bytes = image::encode_png(img.w, img.h, &image::rgb8(frame), png::ColorType::Rgb, &texts)
            .map_err(|e| Failure::new("OSError", e))?;
        std::fs::write(folder.join(&name), bytes).map_err(|e| Failure::new("OSError", e.to_string()))?;
        results.push(json!({"filename": name, "subfolder": subfolder, "type": kind}));
        counter += 1;
    }
    ui_only(json!({"images": results}))
}

/// SaveAnimatedPNG writes a real APNG; SaveAnimatedWEBP is a stand-in: the simulator has no WebP encoder,
/// so the `.webp` file holds the same APNG bytes (clients only see the name and the `animated` flag).
fn save_animated(ctx: &NodeCtx<'_>, args: &Args, webp: bool) -> Result<NodeResult, Failure> {
    let img = args.image("images")?;
    let prefix = args.string("filename_prefix").unwrap_or_else(|_| "ComfyUI".into());
    let fps = args.f64("fps").unwrap_or(6.0);
    let (folder, filename, counter, subfolder) = save_path(&prefix, &ctx.shared().dirs.output, img.w, img.h)?;
    let ext = if webp { "webp" } else { "png" };
    let name = format!("{filename}_{counter:05}_.{ext}");
    let bytes = image::encode_apng(&img, fps, &png_texts(ctx)).map_err(|e| Failure::new("OSError", e))?;
    std::fs::write(folder.join(&name), bytes).map_err(|e| Failure::new("OSError", e.to_string()))?;
    let animated = if webp { img.frames.len() != 1 } else { true };
    ui_only(json!({"images": [{"filename": name, "subfolder": subfolder, "type": "output"}], "animated": [animated]}))
}

fn read_input_png(ctx: &NodeCtx<'_>, args: &Args) -> Result<image::Rgba, Failure> {
    let name = args.string("image")?;
    let path = annotated_path(&name, &ctx.shared().dirs).ok_or_else(|| {
        Failure::new(
            "FileNotFoundError",
            format!("[Errno 2] No such file or directory: '{name}'"),
        )
    })?;
    let bytes = std::fs::read(&path)
        .map_err(|e| Failure::new("FileNotFoundError", format!("[Errno 2] {e}: '{}'", path.display())))?;
    image::decode_png(&bytes).map_err(|e| {
        Failure::new(
            "PIL.UnidentifiedImageError",
            format!("{e} (the simulator only decodes PNG): '{name}'"),
        )
    })
}

fn load_image(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let px = read_input_png(ctx, args)?;
    let rgb: Vec<f32> = px
        .data
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]].map(|c| c as f32 / 255.0))
        .collect();
    let mask = if px.has_alpha {
        Masks {
            w: px.w,
            h: px.h,
            frames: vec![px.data.chunks_exact(4).map(|p| 1.0 - p[3] as f32 / 255.0).collect()],
        }
    } else {
        Masks {
            w: 64,
            h: 64,
            frames: vec![vec![0.0; 64 * 64]],
        }
    };
    out(vec![
        Val::Image(Arc::new(Images {
            w: px.w,
            h: px.h,
            frames: vec![rgb],
        })),
        Val::Mask(Arc::new(mask)),
    ])
}

fn load_image_mask(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let px = read_input_png(ctx, args)?;
    let channel = args.string("channel").unwrap_or_else(|_| "alpha".into());
    let idx = match channel.as_str() {
        "red" => 0,
        "green" => 1,
        "blue" => 2,
        _ => 3,
    };
    let frame: Vec<f32> = px
        .data
        .chunks_exact(4)
        .map(|p| {
            let v = p[idx] as f32 / 255.0;
            if idx == 3 {
                1.0 - v
            } else {
                v
            }
        })
        .collect();
    out(vec![Val::Mask(Arc::new(Masks {
        w: px.w,
        h: px.h,
        frames: vec![frame],
    }))])
}

/// `_gradient(width, height, phase)` of the acceptance nodes.
fn gradient(w: u32, h: u32, phase: f32) -> Vec<f32> {
    let lin = |i: u32, n: u32| if n > 1 { i as f32 / (n - 1) as f32 } else { 0.0 };
    let mut v = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            v.extend([(lin(x, w) + phase) % 1.0, lin(y, h), 0.5]);
        }
    }
    v
}

async fn acceptance_progress(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let steps = args.i64("steps")?.clamp(1, 1000);
    let step_seconds = args.f64("step_seconds")?.clamp(0.0, 60.0);
    let (w, h) = (
        clamp_u32(args.i64("width")?).clamp(1, 1024),
        clamp_u32(args.i64("height")?).clamp(1, 1024),
    );
    let send_preview = args.bool("send_preview")?;
    ctx.progress_text(&format!("starting {steps} steps"));
    let mut frame = None;
    for i in 0..steps {
        if step_seconds > 0.0 {
            ctx.sleep(step_seconds).await;
        }
        ctx.check_interrupt()?;
        let arr = gradient(w, h, i as f32 / steps as f32);
        let preview = send_preview.then(|| Preview {
            png: false,
            w,
            h,
            rgb: arr.clone(),
            max_size: Some(ctx.shared().cfg.preview_size),
        });
        ctx.progress((i + 1) as f64, steps as f64, preview).await?;
        frame = Some(arr);
    }
    let frame = frame.unwrap_or_else(|| gradient(w, h, 0.0));
    out(vec![Val::Image(Arc::new(Images {
        w,
        h,
        frames: vec![frame],
    }))])
}

/// Python's `round()` (half to even).
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

async fn acceptance_slow(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let seconds = args.f64("seconds")?.clamp(0.0, 3600.0);
    let nonce = args.i64("nonce")?;
    let total = round_half_even(seconds).max(1.0);
    let mut elapsed = 0.0f64;
    let mut last_reported = 0.0f64;
    // Node time advances by the slept slices, so a stall or a slow machine does not skip progress.
    for _ in 0..40_000 {
        if elapsed >= seconds - 1e-9 {
            break;
        }
        ctx.check_interrupt()?;
        let whole = (elapsed + 1e-9).floor();
        if whole > last_reported {
            last_reported = whole;
            ctx.progress(whole.min(total), total, None).await?;
        }
        let slice = (seconds - elapsed).clamp(0.0, 0.1);
        ctx.sleep(slice).await;
        elapsed += slice;
    }
    ctx.progress(total, total, None).await?;
    ui_only(json!({"text": [format!("slept {seconds:.1}s nonce={nonce}")]}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(0.4), 0.0);
        assert_eq!(round_half_even(30.0), 30.0);
    }

    #[test]
    fn gradient_matches_python_shape() {
        let g = gradient(2, 2, 0.5);
        assert_eq!(g.len(), 12);
        assert!((g[0] - 0.5).abs() < 1e-6 && (g[3] - 0.5).abs() < 1e-6);
    }
}
