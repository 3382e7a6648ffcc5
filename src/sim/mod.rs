//! The ComfyUI simulator: a loopback-only server that speaks ComfyUI 0.3.64 as the fixtures show.
