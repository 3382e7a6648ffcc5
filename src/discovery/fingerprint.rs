//! What answers on a port, decided from the bodies of cheap unauthenticated GETs. Pure functions over parsed
//! answers, so every rule is tested against the recorded fixtures without a network.
use crate::comfy::http::SIMULATOR_ARGV;
use crate::comfy::protocol::SystemStatsBody;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of server found at an address. The string form (`as_str`) is the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Comfyui,
    Litellm,
    /// Wan2GP (its Gradio title is "WanGP").
    Wan2gp,
    /// RVC WebUI (voice conversion).
    Rvc,
    /// AudioLDM or AudioLDM 2 (text to sound).
    Audioldm,
    /// Any other Gradio app.
    Gradio,
    /// WanGP run as an MCP server (`wgp.py --mcp`).
    WangpMcp,
    /// Something answers HTTP, but none of the fingerprints matched.
    Unknown,
    /// Nothing listens (connection refused) or nothing answered in time.
    None,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Comfyui => "comfyui",
            ServerKind::Litellm => "litellm",
            ServerKind::Wan2gp => "wan2gp",
            ServerKind::Rvc => "rvc",
            ServerKind::Audioldm => "audioldm",
            ServerKind::Gradio => "gradio",
            ServerKind::WangpMcp => "wangp_mcp",
            ServerKind::Unknown => "unknown",
            ServerKind::None => "none",
        }
    }

    /// The `Hub.add_service` kind that talks to this server, when this build has one.
    pub fn service_kind(self) -> Option<&'static str> {
        match self {
            ServerKind::Comfyui => Some("comfyui"),
            ServerKind::Litellm => Some("openai"),
            ServerKind::WangpMcp => Some("wangp_mcp"),
            ServerKind::Wan2gp | ServerKind::Rvc | ServerKind::Audioldm | ServerKind::Gradio => Some("gradio"),
            _ => None,
        }
    }
}

/// A ComfyUI recognised from `GET /system_stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComfyFingerprint {
    pub version: String,
    pub devices: Vec<String>,
    pub simulator: bool,
}

/// `GET /system_stats` → ComfyUI when the body has an object `system` and an array `devices`.
pub fn comfyui(body: &[u8]) -> Option<ComfyFingerprint> {
    let value: Value = serde_json::from_slice(body).ok()?;
    if !value.get("system").is_some_and(Value::is_object) || !value.get("devices").is_some_and(Value::is_array) {
        return None;
    }
    let stats: SystemStatsBody = serde_json::from_value(value).ok()?;
    Some(ComfyFingerprint {
        version: stats.system.comfyui_version.unwrap_or_else(|| "unknown".into()),
        simulator: stats.system.argv.iter().any(|a| a == SIMULATOR_ARGV),
        devices: stats.devices.into_iter().filter_map(|d| d.name).collect(),
    })
}

/// `POST /mcp/` with `initialize` → the server's `serverInfo` (`{"name": "WanGP", "version": "1.10.1"}`), from
/// a JSON answer or the `data:` line of an SSE one.
pub fn mcp_server_info(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let json = if text.trim_start().starts_with('{') {
        text.to_string()
    } else {
        // An SSE answer, read by the shared decoder (a probe body is capped, so the decoder's limit is moot).
        let mut decoder = crate::net::sse::SseDecoder::new();
        let mut events = decoder.push(body).ok()?;
        events.extend(decoder.finish());
        events.into_iter().find(|d| d.contains("serverInfo"))?
    };
    let v: Value = serde_json::from_str(&json).ok()?;
    let info = v.get("result")?.get("serverInfo")?;
    let name = info.get("name")?.as_str()?.to_string();
    let version = info.get("version").and_then(Value::as_str).unwrap_or("").to_string();
    Some((name, version))
}

/// `GET /health/liveliness` → LiteLLM when the body is the JSON string "I'm alive!" (or that text bare).
pub fn litellm_liveliness(body: &[u8]) -> bool {
    const ALIVE: &str = "I'm alive!";
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::String(s)) => s == ALIVE,
        _ => std::str::from_utf8(body).is_ok_and(|t| t.trim() == ALIVE),
    }
}

/// `GET /health/readiness` of older proxies carries `litellm_version`; 1.10x proxies do not.
pub fn litellm_readiness_version(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Readiness {
        #[serde(default)]
        litellm_version: Option<String>,
    }
    serde_json::from_slice::<Readiness>(body).ok()?.litellm_version
}

/// The parts of a Gradio `/config` that discovery reads (every other key is ignored).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GradioConfig {
    pub version: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub api_prefix: Option<String>,
    pub components: Vec<GradioComponent>,
    pub dependencies: Vec<GradioDependency>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GradioComponent {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub props: ComponentProps,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ComponentProps {
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GradioDependency {
    /// A string, `null` or `false` on the wire.
    #[serde(default)]
    pub api_name: Value,
}

impl GradioConfig {
    /// Parses a `/config` body; `None` when it is not Gradio's (no `version`, `components`, `dependencies`).
    pub fn parse(body: &[u8]) -> Option<GradioConfig> {
        serde_json::from_slice(body).ok()
    }

    pub fn api_names(&self) -> impl Iterator<Item = &str> {
        self.dependencies.iter().filter_map(|d| d.api_name.as_str())
    }

    fn has_api(&self, name: &str) -> bool {
        self.api_names().any(|n| n == name)
    }

    /// Text of the Markdown and HTML components (where apps put their headline).
    fn texts(&self) -> impl Iterator<Item = &str> {
        self.components
            .iter()
            .filter(|c| matches!(c.kind.as_str(), "markdown" | "html"))
            .filter_map(|c| c.props.value.as_str())
    }

    /// "3.x" apps have no `protocol` (WebSocket queue); newer ones say which SSE flavour they speak.
    pub fn protocol_name(&self) -> &str {
        self.protocol.as_deref().unwrap_or("ws")
    }
}

/// A Gradio app as classified from its `/config`.
#[derive(Debug, Clone, PartialEq)]
pub struct GradioApp {
    pub kind: ServerKind,
    /// "WanGP", "RVC WebUI", "AudioLDM 2", or the app's title.
    pub name: String,
    /// The app's own version when it shows one (WanGP's headline `WanGP v12.60`).
    pub app_version: Option<String>,
}

/// Title first, then headline text and api_name sets (PROTOCOL-BACKENDS §2.13, §3–§5).
pub fn classify_gradio(config: &GradioConfig) -> GradioApp {
    let title = config.title.clone().unwrap_or_else(|| "Gradio".into());
    let wangp_headline = config.texts().find_map(wangp_version);
    let wangp_chain = ["init_generate", "process_tasks", "save_inputs"]
        .iter()
        .all(|n| config.has_api(n));
    if title == "WanGP" || wangp_headline.is_some() || wangp_chain {
        return GradioApp {
            kind: ServerKind::Wan2gp,
            name: "WanGP".into(),
            app_version: wangp_headline,
        };
    }
    if title == "RVC WebUI" || config.has_api("infer_convert") {
        return GradioApp {
            kind: ServerKind::Rvc,
            name: "RVC WebUI".into(),
            app_version: None,
        };
    }
    let audioldm_text = config.texts().find(|t| t.contains("AudioLDM"));
    if audioldm_text.is_some() || config.has_api("text2audio") {
        let v2 = audioldm_text.is_some_and(|t| t.contains("AudioLDM 2")) || config.has_api("text2audio");
        return GradioApp {
            kind: ServerKind::Audioldm,
            name: if v2 { "AudioLDM 2" } else { "AudioLDM" }.into(),
            app_version: None,
        };
    }
    GradioApp {
        kind: ServerKind::Gradio,
        name: title,
        app_version: None,
    }
}

/// `WanGP v12.60` in a headline with HTML tags (`Wan<SUP>GP</SUP> v12.60`): the tags are stripped first.
pub fn wangp_version(text: &str) -> Option<String> {
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let at = plain.find("WanGP v")?;
    let rest = &plain[at + "WanGP v".len()..];
    let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty() && version.starts_with(|c: char| c.is_ascii_digit())).then(|| version.to_string())
}

/// A 401 from `/config` with Gradio's `detail` body (4.x/5.x string, 6.x object): an app behind a login.
pub fn gradio_login_required(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match value.get("detail") {
        Some(Value::String(s)) => s == "Not authenticated",
        Some(Value::Object(o)) => o.get("error").and_then(Value::as_str) == Some("Not authenticated"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wangp_headline_versions() {
        let real = r#"<div align=center><H1>Wan<SUP style="color: #2563eb;">GP</SUP> v12.60 <FONT SIZE=4>by <I>DeepBeepMeep</I></FONT></H1></div>"#;
        assert_eq!(wangp_version(real).as_deref(), Some("12.60"));
        assert_eq!(wangp_version("WanGP v0.0-fake").as_deref(), Some("0.0"));
        assert_eq!(wangp_version("WanGP vX"), None);
        assert_eq!(wangp_version("no headline"), None);
    }

    #[test]
    fn liveliness_body() {
        assert!(litellm_liveliness(br#""I'm alive!""#));
        assert!(litellm_liveliness(b"I'm alive!\n"));
        assert!(!litellm_liveliness(br#"{"status":"ok"}"#));
        assert!(!litellm_liveliness(b"<html>"));
    }

    #[test]
    fn login_bodies() {
        assert!(gradio_login_required(br#"{"detail":"Not authenticated"}"#));
        assert!(gradio_login_required(
            br#"{"detail":{"error":"Not authenticated","auth_message":null}}"#
        ));
        assert!(!gradio_login_required(br#"{"detail":"Not Found"}"#));
    }

    fn config(title: &str, apis: &[&str], html: &str) -> GradioConfig {
        GradioConfig {
            version: "3.50.2".into(),
            title: Some(title.into()),
            components: vec![GradioComponent {
                kind: "html".into(),
                props: ComponentProps { value: html.into() },
            }],
            dependencies: apis
                .iter()
                .map(|a| GradioDependency { api_name: (*a).into() })
                .chain([GradioDependency { api_name: false.into() }])
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn classifies_the_studio_apps() {
        assert_eq!(classify_gradio(&config("RVC WebUI", &[], "")).kind, ServerKind::Rvc);
        assert_eq!(
            classify_gradio(&config("Gradio", &["infer_convert"], "")).kind,
            ServerKind::Rvc
        );
        let v1 = classify_gradio(&config("Gradio", &[], "<h1>AudioLDM: Text-to-Audio Generation</h1>"));
        assert_eq!((v1.kind, v1.name.as_str()), (ServerKind::Audioldm, "AudioLDM"));
        let v2 = classify_gradio(&config("Gradio", &["text2audio"], ""));
        assert_eq!((v2.kind, v2.name.as_str()), (ServerKind::Audioldm, "AudioLDM 2"));
        let chain = classify_gradio(&config("X", &["init_generate", "process_tasks", "save_inputs"], ""));
        assert_eq!(chain.kind, ServerKind::Wan2gp);
        let other = classify_gradio(&config("Forge", &["txt2img"], ""));
        assert_eq!((other.kind, other.name.as_str()), (ServerKind::Gradio, "Forge"));
    }
}
