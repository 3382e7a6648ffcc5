//! The accept loop and fault control: listening on 127.0.0.1 only, refusing connections for a while (the
//! listener is closed, then bound again on the same port) and process-like restarts.
use super::state::Shared;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Commands from the `Simulator` handle; each is acknowledged once it is in effect.
pub(crate) enum Control {
    Refuse {
        seconds: f64,
        ack: std_mpsc::Sender<()>,
    },
    Restart {
        down_seconds: f64,
        ack: std_mpsc::Sender<()>,
    },
    Shutdown,
}

/// Binds 127.0.0.1:`port` (never anything else). `SO_REUSEADDR` lets a restart take the same port back.
pub(crate) fn bind(port: u16) -> std::io::Result<TcpListener> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    sock.listen(1024)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.clamp(0.0, 86_400.0) } else { 0.0 })
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    tokio::spawn(super::exec::executor_loop(shared.clone()));
    let mut listener = Some(listener);
    let mut refuse_until: Option<Instant> = None;
    loop {
        if listener.is_none() && refuse_until.is_none_or(|t| t <= Instant::now()) {
            match bind(port) {
                Ok(l) => {
                    listener = Some(l);
                    refuse_until = None;
                }
                Err(e) => {
                    // Someone else may hold the port for a moment; try again shortly.
                    log::warn!("simulator: cannot listen on 127.0.0.1:{port} again yet: {e}");
                    refuse_until = Some(Instant::now() + Duration::from_millis(100));
                }
            }
        }
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        let wake = async {
            match refuse_until {
                Some(t) if listener.is_none() => tokio::time::sleep_until(t).await,
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            res = accept => match res {
                Ok((stream, _)) => {
                    shared.counters.http_total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::spawn(super::http::serve_conn(shared.clone(), stream));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            _ = wake => {}
            cmd = control.recv() => match cmd {
                None | Some(Control::Shutdown) => return,
                Some(Control::Refuse { seconds, ack }) => {
                    listener = None;
                    let until = Instant::now() + secs(seconds);
                    refuse_until = Some(refuse_until.map_or(until, |t| t.max(until)));
                    let _ = ack.send(());
                }
                Some(Control::Restart { down_seconds, ack }) => {
                    // Stop listening first, so nothing can reconnect to the "old process".
                    listener = None;
                    refuse_until = Some(Instant::now() + secs(down_seconds));
                    shared.reset_for_restart();
                    let _ = ack.send(());
                }
            },
        }
    }
}
