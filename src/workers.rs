//! Worker runtimes: one single-threaded tokio runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket of every listen address, so a connection, its requests and its upstream
//! connections stay on one thread. On a small box a work-stealing runtime spent more on
//! scheduling than on proxying, and stalled when it had more threads than free cores
//! (`bench/NOTES.md`).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues per socket before `accept`.
const BACKLOG: i32 = 4096;

/// Opens `workers` listening sockets on `addr`, sharing the port when there are several. With
/// port 0 the first socket picks the port and the others join it.
///
/// A port shared with `SO_REUSEPORT` would also let a second process (a second authgate started
/// by mistake) join it and take half of the connections. So before sharing, the address is
/// bound once without `SO_REUSEPORT`: that fails with "address in use" while any other process
/// listens there, whatever its socket options.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let shared = workers > 1;
    let addr = if shared { claim(addr)? } else { addr };
    let first = listen(addr, shared)?;
    let actual = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(listen(actual, shared)?);
    }
    Ok(sockets)
}

/// Binds `addr` exclusively and lets it go again: proof that no other process listens there.
/// Returns the address with the port the kernel picked for port 0.
fn claim(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("the bound address is not an IP address"))?;
    Ok(bound)
}

fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Runs `work` on a new thread with a single-threaded runtime of its own, as worker `index`.
/// `done` fires (or is dropped) when the worker has finished.
pub fn spawn<F, Fut>(
    index: usize,
    work: F,
    done: tokio::sync::oneshot::Sender<()>,
) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("authgate-worker-{index}"))
        .spawn(move || {
            crate::upstream_pool::set_worker_index(index);
            runtime.block_on(work());
            // Tasks still parked on this runtime (idle upstream connections) end with it.
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(())
}
