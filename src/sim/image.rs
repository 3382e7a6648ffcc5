//! Small float-RGB image batches (ComfyUI's `IMAGE` tensors) and the PNG/JPEG codecs the nodes and
//! `/view` need.
/// Largest pixel count (all frames together) a node may create; keeps a bad prompt from eating memory.
pub(crate) const MAX_PIXELS: u64 = 32 * 1024 * 1024;

/// A batch of RGB frames, values 0..1, row-major, 3 floats per pixel (`[B, H, W, 3]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Images {
    pub w: u32,
    pub h: u32,
    pub frames: Vec<Vec<f32>>,
}

/// A batch of masks, values 0..1 (`[B, H, W]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Masks {
    pub w: u32,
    pub h: u32,
    pub frames: Vec<Vec<f32>>,
}

impl Images {
    pub fn solid(w: u32, h: u32, batch: u32, rgb: [f32; 3]) -> Images {
        let frame: Vec<f32> = (0..(w as usize * h as usize)).flat_map(|_| rgb).collect();
        Images {
            w,
            h,
            frames: vec![frame; batch as usize],
        }
    }

    /// A torch-like `str(tensor)` stand-in for `current_inputs`.
    pub fn describe(&self) -> String {
        format!(
            "tensor(<simulated IMAGE batch, shape=[{}, {}, {}, 3]>)",
            self.frames.len(),
            self.h,
            self.w
        )
    }

    pub fn map(&self, f: impl Fn(&[f32]) -> Vec<f32>) -> Images {
        Images {
            w: self.w,
            h: self.h,
            frames: self.frames.iter().map(|fr| f(fr)).collect(),
        }
    }
}

impl Masks {
    pub fn describe(&self) -> String {
        format!(
            "tensor(<simulated MASK batch, shape=[{}, {}, {}]>)",
            self.frames.len(),
            self.h,
            self.w
        )
    }
}

pub(crate) fn to_u8(v: f32) -> u8 {
    (v * 255.0).clamp(0.0, 255.0) as u8
}

pub(crate) fn rgb8(frame: &[f32]) -> Vec<u8> {
    frame.iter().map(|v| to_u8(*v)).collect()
}

/// `ImageOps.contain(img, (max, max))`: fit inside the square, keeping the aspect ratio (scales up too).
pub(crate) fn contain(w: u32, h: u32, max: u32) -> (u32, u32) {
    let max = max.max(1);
    if w == 0 || h == 0 {
        return (max, max);
    }
    let (wf, hf) = (w as f64, h as f64);
    if w >= h {
        (max, ((hf / wf * max as f64).round() as u32).max(1))
    } else {
        (((wf / hf * max as f64).round() as u32).max(1), max)
    }
}

/// Bilinear resize of an interleaved frame with `ch` channels.
pub(crate) fn resize(src: &[f32], w: u32, h: u32, ch: usize, nw: u32, nh: u32) -> Vec<f32> {
    let (w, h, nw, nh) = (w as usize, h as usize, nw.max(1) as usize, nh.max(1) as usize);
    let mut out = vec![0.0f32; nw * nh * ch];
    if w == 0 || h == 0 || src.len() < w * h * ch {
        return out;
    }
    let sx = w as f32 / nw as f32;
    let sy = h as f32 / nh as f32;
    for y in 0..nh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(h - 1);
        let ty = fy - y0 as f32;
        for x in 0..nw {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(w - 1);
            let tx = fx - x0 as f32;
            for c in 0..ch {
                let p = |xx: usize, yy: usize| src[(yy * w + xx) * ch + c];
                let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
                let bottom = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
                out[(y * nw + x) * ch + c] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    out
}

/// Separable Gaussian blur (`ImageBlur`: kernel `2*radius+1`, edges clamped).
pub(crate) fn blur(src: &[f32], w: u32, h: u32, radius: u32, sigma: f32) -> Vec<f32> {
    let (w, h, r) = (w as usize, h as usize, radius as usize);
    if r == 0 || w == 0 || h == 0 {
        return src.to_vec();
    }
    let sigma = if sigma > 0.0 { sigma } else { 1.0 };
    let kernel: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let d = i as f32 - r as f32;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let pass = |input: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0f32; input.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (i, k) in kernel.iter().enumerate() {
                        let off = i as isize - r as isize;
                        let (xx, yy) = if horizontal {
                            ((x as isize + off).clamp(0, w as isize - 1) as usize, y)
                        } else {
                            (x, (y as isize + off).clamp(0, h as isize - 1) as usize)
                        };
                        acc += k * input[(yy * w + xx) * 3 + c];
                    }
                    out[(y * w + x) * 3 + c] = acc;
                }
            }
        }
        out
    };
    pass(&pass(src, true), false)
}

/// PNG with optional `tEXt` chunks (SaveImage embeds the prompt and workflow like ComfyUI).
pub(crate) fn encode_png(
    w: u32,
    h: u32,
    data: &[u8],
    color: png::ColorType,
    texts: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        for (k, v) in texts {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(|e| e.to_string())?;
        }
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(data).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) fn encode_png_rgb(w: u32, h: u32, frame: &[f32]) -> Result<Vec<u8>, String> {
    encode_png(w, h, &rgb8(frame), png::ColorType::Rgb, &[])
}

/// An animated PNG (SaveAnimatedPNG).
pub(crate) fn encode_apng(img: &Images, fps: f64, texts: &[(String, String)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let frames = u32::try_from(img.frames.len()).map_err(|e| e.to_string())?;
        let mut enc = png::Encoder::new(&mut out, img.w, img.h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        for (k, v) in texts {
            enc.add_text_chunk(k.clone(), v.clone()).map_err(|e| e.to_string())?;
        }
        if frames > 1 {
            enc.set_animated(frames, 0).map_err(|e| e.to_string())?;
            let ms = (1000.0 / fps.max(0.01)).round().clamp(1.0, 65535.0) as u16;
            enc.set_frame_delay(ms, 1000).map_err(|e| e.to_string())?;
        }
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        for frame in &img.frames {
            writer.write_image_data(&rgb8(frame)).map_err(|e| e.to_string())?;
        }
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Baseline JPEG, quality 95 like ComfyUI's previews.
pub(crate) fn encode_jpeg(w: u32, h: u32, rgb: &[u8], quality: u8) -> Result<Vec<u8>, String> {
    let (w16, h16) = (
        u16::try_from(w).map_err(|e| e.to_string())?,
        u16::try_from(h).map_err(|e| e.to_string())?,
    );
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A decoded PNG as 8-bit RGBA.
pub(crate) struct Rgba {
    pub w: u32,
    pub h: u32,
    pub has_alpha: bool,
    pub data: Vec<u8>,
}

pub(crate) fn decode_png(bytes: &[u8]) -> Result<Rgba, String> {
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec
        .read_info()
        .map_err(|e| format!("cannot identify image file ({e})"))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!("image too large for the simulator ({w}x{h})"));
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("cannot decode image ({e})"))?;
    let buf = &buf[..info.buffer_size()];
    let px = w as usize * h as usize;
    let (data, has_alpha) = match info.color_type {
        png::ColorType::Rgba => (buf.to_vec(), true),
        png::ColorType::Rgb => (
            buf.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
            false,
        ),
        png::ColorType::GrayscaleAlpha => (
            buf.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(),
            true,
        ),
        png::ColorType::Grayscale => (buf.iter().flat_map(|g| [*g, *g, *g, 255]).collect(), false),
        png::ColorType::Indexed => return Err("indexed PNG after expansion".into()),
    };
    if data.len() < px * 4 {
        return Err("truncated image data".into());
    }
    Ok(Rgba { w, h, has_alpha, data })
}

/// A valid, black, uncompressed RGB PNG of any size, built in O(size) memcpy time even in debug builds:
/// stored deflate blocks of zeros, a closed-form Adler-32, and identical IDAT chunks that share one CRC.
pub(crate) fn zero_png(w: u32, h: u32) -> Vec<u8> {
    const BLOCK: usize = 65_535;
    let raw_len = (w as usize * 3 + 1) * h as usize;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    push_chunk(&mut out, b"IHDR", &ihdr);
    // zlib header: deflate, 32K window, no dictionary, fastest.
    push_chunk(&mut out, b"IDAT", &[0x78, 0x01]);
    let full_blocks = raw_len / BLOCK;
    let rest = raw_len % BLOCK;
    let stored = |len: usize, last: bool| {
        let mut b = Vec::with_capacity(len + 5);
        b.push(u8::from(last));
        b.extend((len as u16).to_le_bytes());
        b.extend((!(len as u16)).to_le_bytes());
        b.resize(len + 5, 0);
        b
    };
    let block = stored(BLOCK, false);
    let mut crc = flate2::Crc::new();
    crc.update(b"IDAT");
    crc.update(&block);
    let block_crc = crc.sum().to_be_bytes();
    for i in 0..full_blocks {
        if i + 1 == full_blocks && rest == 0 {
            break;
        }
        out.extend((block.len() as u32).to_be_bytes());
        out.extend(b"IDAT");
        out.extend(&block);
        out.extend(block_crc);
    }
    // Adler-32 of `raw_len` zero bytes: a = 1, b = raw_len (mod 65521).
    let adler = ((raw_len % 65_521) as u32) << 16 | 1;
    let mut tail = if rest > 0 || full_blocks == 0 {
        stored(rest, true)
    } else {
        stored(BLOCK, true)
    };
    tail.extend(adler.to_be_bytes());
    push_chunk(&mut out, b"IDAT", &tail);
    push_chunk(&mut out, b"IEND", &[]);
    out
}

fn push_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(kind);
    out.extend(data);
    out.extend(crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_and_contain() {
        let img = Images::solid(4, 3, 1, [1.0, 0.0, 0.5]);
        let png = encode_png_rgb(4, 3, &img.frames[0]).unwrap_or_default();
        let dec = decode_png(&png).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((dec.w, dec.h, dec.has_alpha), (4, 3, false));
        assert_eq!(&dec.data[..4], &[255, 0, 127, 255]);
        assert_eq!(contain(64, 48, 512), (512, 384));
        assert_eq!(contain(48, 64, 32), (24, 32));
        for (w, h) in [(16, 8), (2048, 40), (100, 1000), (28, 771), (28, 1542)] {
            let big = zero_png(w, h);
            let dec = decode_png(&big).unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
            assert_eq!((dec.w, dec.h), (w, h));
            assert!(dec.data.chunks_exact(4).all(|p| p == [0, 0, 0, 255]));
        }
        let jpg = encode_jpeg(4, 3, &rgb8(&img.frames[0]), 95).unwrap_or_default();
        assert_eq!(&jpg[..3], &[0xff, 0xd8, 0xff]);
    }
}
