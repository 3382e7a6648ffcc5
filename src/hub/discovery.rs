//! Finding servers: probing addresses for a ComfyUI, and discovering what runs on hosts' known ports.
use super::Hub;
use crate::error::Result;
use crate::event::EventKind;
use std::time::Duration;

impl Hub {
    /// Checks addresses for a ComfyUI (in parallel); blocks the calling thread up to about `timeout`.
    pub fn probe(&self, urls: &[String], timeout: Duration) -> Result<Vec<crate::discovery::probe::ProbeResult>> {
        let client = self.http.clone();
        self.block_on(crate::discovery::probe::probe_all(client, urls, timeout))
    }

    /// Finds the servers on `hosts` (known ports of bare hosts, or the one port given) in parallel; blocks the
    /// calling thread up to about `options.timeout`. One finding per address, "nothing there" included.
    pub fn discover(
        &self,
        hosts: &[String],
        options: &crate::discovery::DiscoveryOptions,
    ) -> Result<Vec<crate::discovery::Finding>> {
        self.ensure_open()?;
        let found = self.block_on(crate::discovery::discover(hosts, options))??;
        for f in found.iter().filter(|f| f.kind != crate::discovery::ServerKind::None) {
            self.shared.emit(EventKind::ServiceDiscovered {
                url: f.url.clone(),
                kind: f.kind.as_str().to_string(),
                name: f.name.clone(),
                summary: f.summary.clone(),
                service_kind: f.service_kind.map(str::to_string),
            });
        }
        Ok(found)
    }
}
