//! Model Context Protocol servers. Today: WanGP's MCP mode (`wgp.py --mcp --mcp-transport streamable-http`),
//! the way to drive WanGP generations without replaying its browser-driven Gradio chain.
pub mod client;
pub mod service;
pub mod wangp;

/// FastMCP's default port and path.
pub const DEFAULT_PORT: u16 = 8000;
pub const DEFAULT_PATH: &str = "mcp/";
