//! Cheap stand-ins for the model nodes the shipped templates use (`workflows/`): checkpoint, CLIP, ControlNet and
//! upscale loaders, text encoding, empty latents (SD and LTX-Video), KSampler / KSamplerAdvanced / SamplerCustom,
//! the LTX-Video conditioning and scheduler, ControlNet, VAE decode/encode and model upscaling.
//!
//! Nothing is learned or denoised: loaders return opaque handles (names checked against the simulated model
//! lists in `object_info_core.json`), conditioning carries its text, samplers sleep per step and report progress
//! with latent previews like the real `KSampler` (`ProgressBar.update_absolute(step + 1, steps, preview)`), and
//! the latent they return carries a fingerprint of everything that shapes a real result (model, seed, steps, cfg,
//! sampler, prompts, control image). `VAEDecode` paints a pattern from that fingerprint, so different seeds or
//! prompts give different pixels and equal inputs give equal bytes. Sizes follow the real nodes (SD latents are
//! 1/8 of the image, LTX-Video 1/32 with `8·n + 1` frames) but a decoded batch is capped at
//! [`DECODE_MAX_PIXELS`] and an upscale at [`UPSCALE_MAX_PIXELS`] (scaled down, aspect kept) to stay fast.
use super::exec::{Failure, NodeCtx, Preview};
use super::image::{self, Images};
use super::nodes::{check_size, clamp_u32, kind_of, out, Args, NodeResult, Val};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Largest decoded batch (all frames together); larger latents decode at a smaller size.
pub(crate) const DECODE_MAX_PIXELS: u64 = 2 * 1024 * 1024;
/// Largest frame `ImageUpscaleWithModel` makes.
pub(crate) const UPSCALE_MAX_PIXELS: u64 = 1024 * 1024;
/// Longest side of a latent preview before `preview_size` scaling.
const PREVIEW_MAX: u32 = 256;

/// What flows between the model stand-ins.
#[derive(Debug)]
pub(crate) enum Opaque {
    /// `MODEL`, `CLIP`, `VAE`, `CONTROL_NET`, `UPSCALE_MODEL`.
    Model(Handle),
    /// `CONDITIONING`.
    Cond(Cond),
    /// `LATENT`.
    Latent(Latent),
    /// `SAMPLER` (KSamplerSelect).
    Sampler(String),
    /// `SIGMAS`: only the step count matters here.
    Sigmas { steps: u32, key: u64 },
}

#[derive(Debug)]
pub(crate) struct Handle {
    kind: &'static str,
    name: String,
    key: u64,
    /// Upscale factor of an upscale model.
    scale: u32,
}

/// A control (or source) image and how strongly it shows in the decoded result.
#[derive(Debug, Clone)]
pub(crate) struct Hint {
    image: Arc<Images>,
    strength: f32,
}

#[derive(Debug, Clone)]
pub(crate) struct Cond {
    texts: Vec<String>,
    key: u64,
    hint: Option<Hint>,
    frame_rate: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Latent {
    /// Size of the decoded image in pixels.
    w: u32,
    h: u32,
    /// Decoded frames per batch item (1 for images).
    frames: u32,
    batch: u32,
    video: bool,
    key: u64,
    /// Sampled (true) or empty/encoded.
    sampled: bool,
    hint: Option<Hint>,
}

impl Latent {
    /// The latent's spatial downscale (SD: 8, LTX-Video: 32).
    fn factor(&self) -> u32 {
        if self.video {
            32
        } else {
            8
        }
    }
}

impl Opaque {
    /// Python's `type(x).__name__` for error messages.
    pub fn py_type(&self) -> &'static str {
        match self {
            Opaque::Model(h) => match h.kind {
                "MODEL" => "ModelPatcher",
                "CLIP" => "CLIP",
                "VAE" => "VAE",
                "CONTROL_NET" => "ControlNet",
                _ => "ImageModelDescriptor",
            },
            Opaque::Cond(_) => "list",
            Opaque::Latent(_) => "dict",
            Opaque::Sampler(_) => "KSAMPLER",
            Opaque::Sigmas { .. } => "Tensor",
        }
    }

    /// A `str(value)` stand-in for `current_inputs` and PreviewAny.
    pub fn describe(&self) -> String {
        match self {
            Opaque::Model(h) => format!("<simulated {} {:?}>", h.kind, h.name),
            Opaque::Cond(c) => format!(
                "[[tensor(<simulated CONDITIONING of {:?}>), {{...}}]]",
                c.texts.join(" | ")
            ),
            Opaque::Latent(l) => {
                let f = l.factor();
                if l.video {
                    format!(
                        "{{'samples': tensor(<simulated LATENT, shape=[{}, 128, {}, {}, {}]>)}}",
                        l.batch,
                        l.frames.saturating_sub(1) / 8 + 1,
                        l.h / f,
                        l.w / f
                    )
                } else {
                    format!(
                        "{{'samples': tensor(<simulated LATENT, shape=[{}, 4, {}, {}]>)}}",
                        l.batch,
                        l.h / f,
                        l.w / f
                    )
                }
            }
            Opaque::Sampler(name) => format!("<simulated KSAMPLER {name}>"),
            Opaque::Sigmas { steps, .. } => format!("tensor(<simulated SIGMAS, shape=[{}]>)", steps + 1),
        }
    }
}

/// A 64-bit fingerprint of a description.
fn key(text: &str) -> u64 {
    let d = Sha256::digest(text.as_bytes());
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// An input's literal as text (seeds above 2^53 keep every digit).
fn raw(args: &Args, name: &str) -> String {
    match args.get(name) {
        Some(Val::Json(v)) => v.to_string(),
        Some(Val::Int(i)) => i.to_string(),
        Some(Val::Str(s)) => s.clone(),
        Some(other) => kind_of(other).to_string(),
        None => String::new(),
    }
}

fn opaque(args: &Args, name: &str) -> Result<Arc<Opaque>, Failure> {
    match args.get(name) {
        Some(Val::Opaque(o)) => Ok(o.clone()),
        Some(other) => Err(Failure::new(
            "AttributeError",
            format!("'{}' object has no attribute '{name}' (input {name})", kind_of(other)),
        )),
        None => Err(Args::missing(name)),
    }
}

fn handle(args: &Args, name: &str) -> Result<Arc<Opaque>, Failure> {
    let o = opaque(args, name)?;
    match &*o {
        Opaque::Model(_) => Ok(o),
        other => Err(Failure::new(
            "AttributeError",
            format!("'{}' object has no attribute 'model' (input {name})", other.py_type()),
        )),
    }
}

fn model_of(o: &Opaque) -> &Handle {
    match o {
        Opaque::Model(h) => h,
        _ => unreachable!("checked by handle()"),
    }
}

fn cond(args: &Args, name: &str) -> Result<Cond, Failure> {
    match &*opaque(args, name)? {
        Opaque::Cond(c) => Ok(c.clone()),
        other => Err(Failure::new(
            "TypeError",
            format!("'{}' object is not a conditioning list (input {name})", other.py_type()),
        )),
    }
}

fn latent(args: &Args, name: &str) -> Result<Latent, Failure> {
    match &*opaque(args, name)? {
        Opaque::Latent(l) => Ok(l.clone()),
        other => Err(Failure::new(
            "TypeError",
            format!("'{}' object is not subscriptable (input {name})", other.py_type()),
        )),
    }
}

fn val(o: Opaque) -> Val {
    Val::Opaque(Arc::new(o))
}

/// The folder `folder_paths` would search for a loader's files.
fn folder_of(class: &str) -> &'static str {
    match class {
        "CheckpointLoaderSimple" => "checkpoints",
        "CLIPLoader" => "text_encoders",
        "ControlNetLoader" => "controlnet",
        "UpscaleModelLoader" => "upscale_models",
        _ => "models",
    }
}

/// `folder_paths.get_full_path_or_raise`: the name must be one of the simulated model files.
fn check_listed(ctx: &NodeCtx<'_>, class: &str, input: &str, name: &str) -> Result<(), Failure> {
    let spec = ctx
        .shared()
        .object_info
        .get(class)
        .and_then(|c| c.get("input"))
        .and_then(|i| i.get("required"))
        .and_then(|r| r.get(input));
    let options = spec.and_then(|s| match s.get(0) {
        Some(Value::Array(list)) => Some(list.clone()),
        Some(Value::String(t)) if t == "COMBO" => s.get(1)?.get("options")?.as_array().cloned(),
        _ => None,
    });
    if options.is_some_and(|o| o.iter().any(|v| v.as_str() == Some(name))) {
        return Ok(());
    }
    Err(Failure::new(
        "FileNotFoundError",
        format!(
            "Model in folder '{}' with filename '{name}' not found.",
            folder_of(class)
        ),
    ))
}

async fn load(ctx: &NodeCtx<'_>, class: &str, input: &str, name: &str, kind: &'static str) -> Result<Handle, Failure> {
    check_listed(ctx, class, input, name)?;
    ctx.sleep(if class == "CheckpointLoaderSimple" { 1.0 } else { 0.3 })
        .await;
    ctx.check_interrupt()?;
    let lower = name.to_lowercase();
    let scale = if lower.contains("x2") || lower.contains("2x") {
        2
    } else if lower.contains("x8") || lower.contains("8x") {
        8
    } else {
        4
    };
    Ok(Handle {
        kind,
        name: name.to_string(),
        key: key(&format!("{kind}|{name}")),
        scale,
    })
}

/// Runs a model stand-in; `None` when `class` is not one.
pub(crate) async fn run(class: &str, args: &Args, ctx: &NodeCtx<'_>) -> Option<Result<NodeResult, Failure>> {
    let result = match class {
        "CheckpointLoaderSimple" => checkpoint(ctx, args).await,
        "CLIPLoader" => {
            async {
                let name = args.string("clip_name")?;
                let mut h = load(ctx, class, "clip_name", &name, "CLIP").await?;
                h.key = key(&format!("{}|{}", h.key, raw(args, "type")));
                out(vec![val(Opaque::Model(h))])
            }
            .await
        }
        "ControlNetLoader" => {
            async {
                let name = args.string("control_net_name")?;
                let h = load(ctx, class, "control_net_name", &name, "CONTROL_NET").await?;
                out(vec![val(Opaque::Model(h))])
            }
            .await
        }
        "UpscaleModelLoader" => {
            async {
                let name = args.string("model_name")?;
                let h = load(ctx, class, "model_name", &name, "UPSCALE_MODEL").await?;
                out(vec![val(Opaque::Model(h))])
            }
            .await
        }
        "CLIPTextEncode" => text_encode(ctx, args).await,
        "EmptyLatentImage" => empty_latent(args, false),
        "EmptyLTXVLatentVideo" => empty_latent(args, true),
        "KSampler" => ksampler(ctx, args, false).await,
        "KSamplerAdvanced" => ksampler(ctx, args, true).await,
        "SamplerCustom" => sampler_custom(ctx, args).await,
        "KSamplerSelect" => args
            .string("sampler_name")
            .and_then(|n| out(vec![val(Opaque::Sampler(n))])),
        "LTXVScheduler" => (|| {
            let steps = clamp_u32(args.i64("steps")?).clamp(1, 10_000);
            let k = key(&format!(
                "ltxv-sigmas|{steps}|{}|{}|{}|{}",
                raw(args, "max_shift"),
                raw(args, "base_shift"),
                raw(args, "stretch"),
                raw(args, "terminal")
            ));
            out(vec![val(Opaque::Sigmas { steps, key: k })])
        })(),
        "LTXVConditioning" => (|| {
            let rate = args.f64("frame_rate")?;
            let with_rate = |mut c: Cond| {
                c.key = key(&format!("{}|fps={rate}", c.key));
                c.frame_rate = Some(rate);
                val(Opaque::Cond(c))
            };
            out(vec![
                with_rate(cond(args, "positive")?),
                with_rate(cond(args, "negative")?),
            ])
        })(),
        "ModelSamplingLTXV" => (|| {
            let m = handle(args, "model")?;
            let h = model_of(&m);
            out(vec![val(Opaque::Model(Handle {
                kind: h.kind,
                name: h.name.clone(),
                key: key(&format!(
                    "{}|shift={}|{}",
                    h.key,
                    raw(args, "max_shift"),
                    raw(args, "base_shift")
                )),
                scale: h.scale,
            }))])
        })(),
        "LTXVPreprocess" => args.image("image").and_then(|img| out(vec![Val::Image(img)])),
        "LTXVImgToVideo" => img_to_video(args),
        "ControlNetApplyAdvanced" => controlnet_apply(args),
        "VAEDecode" => vae_decode(ctx, args).await,
        "VAEEncode" => vae_encode(args),
        "ImageUpscaleWithModel" => upscale(ctx, args).await,
        _ => return None,
    };
    Some(result)
}

async fn checkpoint(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let name = args.string("ckpt_name")?;
    let model = load(ctx, "CheckpointLoaderSimple", "ckpt_name", &name, "MODEL").await?;
    let part = |kind: &'static str| Handle {
        kind,
        name: name.clone(),
        key: key(&format!("{kind}|{name}")),
        scale: 1,
    };
    // LTX-Video checkpoints carry no text encoder: the CLIP output is None, as on a real server.
    let clip = if name.to_lowercase().contains("ltx") {
        Val::None
    } else {
        val(Opaque::Model(part("CLIP")))
    };
    out(vec![val(Opaque::Model(model)), clip, val(Opaque::Model(part("VAE")))])
}

async fn text_encode(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let text = args.string("text")?;
    let clip =
        match args.get("clip") {
            Some(Val::None) | None => return Err(Failure::new(
                "RuntimeError",
                "ERROR: clip input is invalid: None\n\nIf the clip is from a checkpoint loader node your checkpoint \
                 does not contain a valid clip or text encoder model.",
            )),
            _ => handle(args, "clip")?,
        };
    ctx.sleep(0.02).await;
    let k = key(&format!("{}|{text}", model_of(&clip).key));
    out(vec![val(Opaque::Cond(Cond {
        texts: vec![text],
        key: k,
        hint: None,
        frame_rate: None,
    }))])
}

fn empty_latent(args: &Args, video: bool) -> Result<NodeResult, Failure> {
    let f = if video { 32 } else { 8 };
    let w = (clamp_u32(args.i64("width")?) / f).max(1) * f;
    let h = (clamp_u32(args.i64("height")?) / f).max(1) * f;
    let batch = clamp_u32(args.i64("batch_size")?).clamp(1, 4096);
    // LTX-Video: (length - 1) // 8 + 1 latent frames decode to 8·n + 1 frames.
    let frames = if video {
        (clamp_u32(args.i64("length")?).max(1) - 1) / 8 * 8 + 1
    } else {
        1
    };
    out(vec![val(Opaque::Latent(Latent {
        w,
        h,
        frames,
        batch,
        video,
        key: key(&format!("empty|{w}|{h}|{frames}|{batch}|{video}")),
        sampled: false,
        hint: None,
    }))])
}

/// What a sampler run depends on.
struct SampleJob {
    model: u64,
    seed: String,
    add_noise: bool,
    steps: u32,
    /// Everything else that shapes the result (cfg, sampler, scheduler, denoise, sigmas…).
    settings: String,
    positive: Cond,
    negative: Cond,
    latent: Latent,
    denoise: f32,
}

async fn sample(ctx: &NodeCtx<'_>, job: SampleJob) -> Result<Latent, Failure> {
    let l = &job.latent;
    let k = key(&format!(
        "sample|{}|{}|{}|{}|{}|{}|{}|{}",
        job.model, job.seed, job.add_noise, job.steps, job.settings, job.positive.key, job.negative.key, l.key
    ));
    let px = l.w as f64 * l.h as f64;
    let per_step = if l.video {
        0.25 * px * l.frames as f64 / (768.0 * 512.0 * 97.0)
    } else {
        0.05 * px / (512.0 * 512.0)
    }
    .clamp(0.005, 2.0)
        * l.batch.min(16) as f64;
    let (pw, ph) = preview_size(l);
    let noise_key = key(&format!("noise|{}", job.seed));
    for i in 0..job.steps {
        ctx.sleep(per_step).await;
        ctx.check_interrupt()?;
        let t = (i + 1) as f32 / job.steps as f32;
        let rgb = preview(k, noise_key, pw, ph, t);
        let preview = Preview {
            png: false,
            w: pw,
            h: ph,
            rgb,
            max_size: Some(ctx.shared().cfg.preview_size),
        };
        ctx.progress((i + 1) as f64, job.steps as f64, Some(preview)).await?;
    }
    let hint = match (&job.positive.hint, &l.hint) {
        (Some(h), _) => Some(h.clone()),
        // img2img: the source shows through as much as it was not denoised.
        (None, Some(src)) => Some(Hint {
            image: src.image.clone(),
            strength: src.strength * (1.0 - job.denoise).clamp(0.0, 1.0),
        }),
        (None, None) => None,
    };
    Ok(Latent {
        key: k,
        sampled: true,
        hint,
        ..l.clone()
    })
}

fn preview_size(l: &Latent) -> (u32, u32) {
    let f = l.factor();
    let (w, h) = ((l.w / f).max(1), (l.h / f).max(1));
    if w.max(h) > PREVIEW_MAX {
        image::contain(w, h, PREVIEW_MAX)
    } else {
        (w, h)
    }
}

async fn ksampler(ctx: &NodeCtx<'_>, args: &Args, advanced: bool) -> Result<NodeResult, Failure> {
    let model = handle(args, "model")?;
    let positive = cond(args, "positive")?;
    let negative = cond(args, "negative")?;
    let latent = latent(args, "latent_image")?;
    let total = clamp_u32(args.i64("steps")?).clamp(1, 10_000);
    let (seed, add_noise, steps, denoise, extra) = if advanced {
        let start = clamp_u32(args.i64("start_at_step")?).min(total);
        let end = clamp_u32(args.i64("end_at_step")?).min(total);
        let extra = format!(
            "{start}|{end}|{}|{}",
            raw(args, "add_noise"),
            raw(args, "return_with_leftover_noise")
        );
        let add = args.string("add_noise").map(|a| a != "disable").unwrap_or(true);
        (
            raw(args, "noise_seed"),
            add,
            end.saturating_sub(start).max(1),
            1.0,
            extra,
        )
    } else {
        let denoise = args.f64("denoise")? as f32;
        (raw(args, "seed"), true, total, denoise, raw(args, "denoise"))
    };
    let job = SampleJob {
        model: model_of(&model).key,
        seed,
        add_noise,
        steps,
        settings: format!(
            "{total}|{}|{}|{}|{extra}",
            raw(args, "cfg"),
            raw(args, "sampler_name"),
            raw(args, "scheduler")
        ),
        positive,
        negative,
        latent,
        denoise,
    };
    let result = sample(ctx, job).await?;
    out(vec![val(Opaque::Latent(result))])
}

async fn sampler_custom(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let model = handle(args, "model")?;
    let sampler = match &*opaque(args, "sampler")? {
        Opaque::Sampler(s) => s.clone(),
        other => {
            return Err(Failure::new(
                "AttributeError",
                format!("'{}' is not a SAMPLER", other.py_type()),
            ))
        }
    };
    let (steps, sigmas) = match &*opaque(args, "sigmas")? {
        Opaque::Sigmas { steps, key } => (*steps, *key),
        other => {
            return Err(Failure::new(
                "AttributeError",
                format!("'{}' is not SIGMAS", other.py_type()),
            ))
        }
    };
    let job = SampleJob {
        model: model_of(&model).key,
        seed: raw(args, "noise_seed"),
        add_noise: args.bool("add_noise")?,
        steps,
        settings: format!("{}|{sampler}|{sigmas}", raw(args, "cfg")),
        positive: cond(args, "positive")?,
        negative: cond(args, "negative")?,
        latent: latent(args, "latent_image")?,
        denoise: 1.0,
    };
    let result = val(Opaque::Latent(sample(ctx, job).await?));
    // (output, denoised_output): the same latent here.
    out(vec![result.clone(), result])
}

fn img_to_video(args: &Args) -> Result<NodeResult, Failure> {
    let image = args.image("image")?;
    let _vae = handle(args, "vae")?;
    let strength = args.f64("strength")? as f32;
    let w = (clamp_u32(args.i64("width")?) / 32).max(1) * 32;
    let h = (clamp_u32(args.i64("height")?) / 32).max(1) * 32;
    let batch = clamp_u32(args.i64("batch_size")?).clamp(1, 4096);
    let frames = (clamp_u32(args.i64("length")?).max(1) - 1) / 8 * 8 + 1;
    let image_key = images_key(&image);
    let hint = Hint { image, strength };
    let with_image = |mut c: Cond| {
        c.key = key(&format!("{}|i2v={image_key}|{strength}", c.key));
        val(Opaque::Cond(c))
    };
    out(vec![
        with_image(cond(args, "positive")?),
        with_image(cond(args, "negative")?),
        val(Opaque::Latent(Latent {
            w,
            h,
            frames,
            batch,
            video: true,
            key: key(&format!("i2v|{w}|{h}|{frames}|{batch}|{image_key}|{strength}")),
            sampled: false,
            hint: Some(hint),
        })),
    ])
}

fn images_key(img: &Images) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(format!("{}x{}x{}", img.w, img.h, img.frames.len()).as_bytes());
    for f in &img.frames {
        hasher.update(image::rgb8(f));
    }
    let d = hasher.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn controlnet_apply(args: &Args) -> Result<NodeResult, Failure> {
    let positive = cond(args, "positive")?;
    let negative = cond(args, "negative")?;
    let strength = args.f64("strength")?;
    // Like the real node: strength 0 returns the conditioning untouched.
    if strength == 0.0 {
        return out(vec![val(Opaque::Cond(positive)), val(Opaque::Cond(negative))]);
    }
    let net = handle(args, "control_net")?;
    let image = args.image("image")?;
    let k = format!(
        "{}|{}|{strength}|{}|{}",
        model_of(&net).key,
        images_key(&image),
        raw(args, "start_percent"),
        raw(args, "end_percent")
    );
    let hint = Hint {
        image,
        strength: strength.clamp(0.0, 1.0) as f32,
    };
    let apply = |mut c: Cond| {
        c.key = key(&format!("{}|cn={k}", c.key));
        c.hint = Some(hint.clone());
        val(Opaque::Cond(c))
    };
    out(vec![apply(positive), apply(negative)])
}

/// Fills `[0, 1)` floats from a key (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The picture a fingerprint decodes to: two colours, a direction and a frequency from the key, banded across
/// the frame and drifting with `t` (the frame's position in a video), plus a little 8×8-block grain.
fn paint(k: u64, w: u32, h: u32, t: f32) -> Vec<f32> {
    let mut rng = Rng(k | 1);
    let c0 = [rng.next(), rng.next(), rng.next()];
    let c1 = [rng.next(), rng.next(), rng.next()];
    let angle = rng.next() * std::f32::consts::TAU;
    let freq = 1.0 + rng.next() * 4.0;
    let phase = rng.next();
    let (ca, sa) = (angle.cos(), angle.sin());
    let grain_seed = k.rotate_left(17);
    let mut v = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        let fy = y as f32 / h.max(1) as f32;
        for x in 0..w {
            let fx = x as f32 / w.max(1) as f32;
            let u = (fx * ca + fy * sa) * freq + phase + t * 0.5;
            let wave = 1.0 - (2.0 * u.rem_euclid(1.0) - 1.0).abs();
            let cell = ((x / 8) as u64) << 32 | (y / 8) as u64;
            let grain = (Rng(grain_seed ^ cell.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).next() - 0.5) * 0.12;
            for c in 0..3 {
                v.push((c0[c] + (c1[c] - c0[c]) * wave + grain).clamp(0.0, 1.0));
            }
        }
    }
    v
}

/// A step's latent preview: the final picture emerging from the seed's noise.
fn preview(k: u64, noise_key: u64, w: u32, h: u32, t: f32) -> Vec<f32> {
    let target = paint(k, w, h, 0.0);
    let mut rng = Rng(noise_key | 1);
    target.iter().map(|p| p * t + rng.next() * (1.0 - t)).collect()
}

async fn vae_decode(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let l = latent(args, "samples")?;
    let vae = handle(args, "vae")?;
    let count = l.frames as u64 * l.batch as u64;
    let mut w = l.w;
    let mut h = l.h;
    let total = w as u64 * h as u64 * count;
    if total > DECODE_MAX_PIXELS {
        let s = (DECODE_MAX_PIXELS as f64 / total as f64).sqrt();
        w = ((w as f64 * s) as u32).max(8);
        h = ((h as f64 * s) as u32).max(8);
    }
    check_size(w, h, count as u32)?;
    ctx.sleep((0.1 * (w as f64 * h as f64 * count as f64) / (512.0 * 512.0)).clamp(0.01, 2.0))
        .await;
    ctx.check_interrupt()?;
    let k = key(&format!("{}|{}|sampled={}", l.key, model_of(&vae).key, l.sampled));
    let hint = l.hint.as_ref().map(|hint| {
        let frame = hint.image.frames.first().cloned().unwrap_or_default();
        (
            image::resize(&frame, hint.image.w, hint.image.h, 3, w, h),
            hint.strength,
        )
    });
    let mut frames = Vec::with_capacity(count as usize);
    for b in 0..l.batch {
        let item = if b == 0 { k } else { key(&format!("{k}|batch={b}")) };
        for f in 0..l.frames {
            let t = if l.frames > 1 {
                f as f32 / (l.frames - 1) as f32
            } else {
                0.0
            };
            let mut px = paint(item, w, h, t);
            if let Some((hint, strength)) = &hint {
                let a = 0.5 * strength;
                for (p, q) in px.iter_mut().zip(hint) {
                    *p = *p * (1.0 - a) + q * a;
                }
            }
            frames.push(px);
        }
    }
    out(vec![Val::Image(Arc::new(Images { w, h, frames }))])
}

fn vae_encode(args: &Args) -> Result<NodeResult, Failure> {
    let image = args.image("pixels")?;
    let vae = handle(args, "vae")?;
    let w = (image.w / 8).max(1) * 8;
    let h = (image.h / 8).max(1) * 8;
    let batch = image.frames.len().max(1) as u32;
    let k = key(&format!("encode|{}|{}", images_key(&image), model_of(&vae).key));
    out(vec![val(Opaque::Latent(Latent {
        w,
        h,
        frames: 1,
        batch,
        video: false,
        key: k,
        sampled: false,
        hint: Some(Hint { image, strength: 1.0 }),
    }))])
}

async fn upscale(ctx: &NodeCtx<'_>, args: &Args) -> Result<NodeResult, Failure> {
    let m = handle(args, "upscale_model")?;
    let img = args.image("image")?;
    let s = model_of(&m).scale.max(1);
    let (mut w, mut h) = (img.w.saturating_mul(s).max(1), img.h.saturating_mul(s).max(1));
    if w as u64 * h as u64 > UPSCALE_MAX_PIXELS {
        let f = (UPSCALE_MAX_PIXELS as f64 / (w as f64 * h as f64)).sqrt();
        w = ((w as f64 * f) as u32).max(1);
        h = ((h as f64 * f) as u32).max(1);
    }
    check_size(w, h, img.frames.len() as u32)?;
    let frames = img.frames.len().max(1) as f64;
    ctx.sleep((0.2 * w as f64 * h as f64 * frames / (1024.0 * 1024.0)).clamp(0.01, 3.0))
        .await;
    ctx.check_interrupt()?;
    let frames = img
        .frames
        .iter()
        .map(|f| image::resize(f, img.w, img.h, 3, w, h))
        .collect();
    out(vec![Val::Image(Arc::new(Images { w, h, frames }))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_keys_paint_different_pictures() {
        let a = paint(1, 16, 16, 0.0);
        let b = paint(2, 16, 16, 0.0);
        assert_eq!(a.len(), 16 * 16 * 3);
        assert_ne!(image::rgb8(&a), image::rgb8(&b));
        assert_eq!(a, paint(1, 16, 16, 0.0));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn video_frames_move() {
        assert_ne!(image::rgb8(&paint(7, 32, 32, 0.0)), image::rgb8(&paint(7, 32, 32, 1.0)));
    }

    #[test]
    fn preview_ends_at_the_picture() {
        assert_eq!(preview(3, 4, 8, 8, 1.0), paint(3, 8, 8, 0.0));
    }
}
