//! The studio's health in one word, from every service's snapshot: what a status bar shows.
use super::status::ServiceSnapshot;
use crate::event::ServiceState;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StudioState {
    /// No services added.
    Empty,
    /// Every service is connected.
    Healthy,
    /// Some are up, some are not (or one follows jobs over HTTP only).
    Degraded,
    /// None is reachable.
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StudioHealth {
    pub state: StudioState,
    pub services: usize,
    pub connected: usize,
    /// The services that are not connected.
    pub unhealthy: Vec<Unhealthy>,
    /// Jobs waiting in the servers' queues, where they tell.
    pub queued_on_servers: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unhealthy {
    pub name: String,
    pub state: ServiceState,
    pub reason: Option<String>,
}

impl StudioHealth {
    pub fn of(services: &[ServiceSnapshot]) -> StudioHealth {
        let connected = services.iter().filter(|s| s.state == ServiceState::Connected).count();
        // Polling still delivers results: it counts as reachable but not healthy.
        let reachable = services
            .iter()
            .filter(|s| matches!(s.state, ServiceState::Connected | ServiceState::Polling))
            .count();
        let state = match (services.len(), reachable) {
            (0, _) => StudioState::Empty,
            (n, _) if connected == n => StudioState::Healthy,
            (_, 0) => StudioState::Down,
            _ => StudioState::Degraded,
        };
        StudioHealth {
            state,
            services: services.len(),
            connected,
            unhealthy: services
                .iter()
                .filter(|s| s.state != ServiceState::Connected)
                .map(|s| Unhealthy {
                    name: s.name.clone(),
                    state: s.state,
                    reason: s.reason.clone(),
                })
                .collect(),
            queued_on_servers: services.iter().filter_map(|s| s.queue_remaining).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceStatus;

    fn service(name: &str, state: ServiceState, queue: Option<u64>) -> ServiceSnapshot {
        let mut s = ServiceStatus::new(name, "comfyui", "http://127.0.0.1:8188/", "c").snapshot();
        s.state = state;
        s.queue_remaining = queue;
        s
    }

    #[test]
    fn one_word_for_the_whole_studio() {
        assert_eq!(StudioHealth::of(&[]).state, StudioState::Empty);
        let up = service("comfy", ServiceState::Connected, Some(2));
        let llm = service("llm", ServiceState::Connected, None);
        let h = StudioHealth::of(&[up.clone(), llm]);
        assert_eq!(
            (h.state, h.connected, h.queued_on_servers),
            (StudioState::Healthy, 2, 2)
        );
        let down = service("wan", ServiceState::Reconnecting, None);
        let h = StudioHealth::of(&[up, down.clone()]);
        assert_eq!(h.state, StudioState::Degraded);
        let names: Vec<_> = h.unhealthy.iter().map(|u| (u.name.as_str(), u.state)).collect();
        assert_eq!(names, vec![("wan", ServiceState::Reconnecting)]);
        let polling = service("comfy", ServiceState::Polling, None);
        assert_eq!(
            StudioHealth::of(std::slice::from_ref(&polling)).state,
            StudioState::Degraded
        );
        assert_eq!(
            StudioHealth::of(&[down, service("x", ServiceState::CircuitOpen, None)]).state,
            StudioState::Down
        );
    }
}
