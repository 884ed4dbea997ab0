//! systemd socket activation: listening sockets handed over by `docket.socket`
//! through `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (sd_listen_fds(3)),
//! so the service itself needs no capability to own ports 443 and 80.
//!
//! Each socket goes to the main (HTTPS) or the redirect (HTTP) server: by its
//! name (`https`/`main` or `http`/`redirect`, from `FileDescriptorName=`),
//! otherwise by its port: a port of `server.redirect_listen` is the redirect,
//! anything else is main.
use std::collections::BTreeSet;

/// Which server a handed-over socket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Main,
    Redirect,
}

/// What the environment says systemd passed to this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub count: usize,
    pub names: Vec<String>,
}

/// Reads the activation variables: `None` unless they are meant for this
/// process (`LISTEN_PID` is our pid) and name at least one socket.
pub fn passed(get: impl Fn(&str) -> Option<String>, pid: u32) -> Result<Option<Passed>, String> {
    let Some(listen_pid) = get("LISTEN_PID") else {
        return Ok(None);
    };
    if listen_pid.trim().parse::<u32>().ok() != Some(pid) {
        return Ok(None);
    }
    let count = match get("LISTEN_FDS") {
        None => return Ok(None),
        Some(n) => n.trim().parse::<usize>().map_err(|_| format!("LISTEN_FDS={n:?} is not a number"))?,
    };
    if count == 0 {
        return Ok(None);
    }
    let names: Vec<String> =
        get("LISTEN_FDNAMES").map(|n| n.split(':').map(str::to_string).collect()).unwrap_or_default();
    if !names.is_empty() && names.len() != count {
        return Err(format!("LISTEN_FDNAMES names {} sockets but LISTEN_FDS is {count}", names.len()));
    }
    Ok(Some(Passed { count, names }))
}

/// The role of socket `name` listening on `port`.
pub fn role(name: Option<&str>, port: u16, redirect_ports: &BTreeSet<u16>) -> Role {
    match name {
        Some("https" | "main") => Role::Main,
        Some("http" | "redirect") => Role::Redirect,
        _ if redirect_ports.contains(&port) => Role::Redirect,
        _ => Role::Main,
    }
}

type Sockets = Vec<(Option<String>, std::net::TcpListener)>;

/// The sockets [`collect`] found, until [`take`] takes them.
static PASSED: std::sync::Mutex<Option<Result<Sockets, String>>> = std::sync::Mutex::new(None);

/// Picks up the sockets systemd passed to this process. Call it first thing in
/// `main`, before any other thread runs: reading them clears the `LISTEN_*`
/// variables, and changing the environment is only safe single-threaded.
pub fn collect() {
    let found = passed(|k| std::env::var(k).ok(), std::process::id()).and_then(|p| match p {
        None => Ok(vec![]),
        Some(p) => {
            let mut fds = listenfd::ListenFd::from_env();
            (0..p.count)
                .map(|i| {
                    let name = p.names.get(i).cloned();
                    let shown = name.clone().unwrap_or_else(|| "unnamed".into());
                    let listener = fds
                        .take_tcp_listener(i)
                        .map_err(|e| format!("socket {} ({shown}) from systemd: {e}", i + 3))?
                        .ok_or_else(|| format!("socket {} ({shown}) from systemd is missing", i + 3))?;
                    Ok((name, listener))
                })
                .collect()
        }
    });
    *PASSED.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
}

/// Takes the sockets [`collect`] found (none when not socket-activated), each
/// with its role. Sockets that are not listening TCP sockets are an error.
pub fn take(redirect_ports: &BTreeSet<u16>) -> Result<Vec<(Role, std::net::TcpListener)>, String> {
    let Some(found) = PASSED.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for (name, listener) in found? {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        out.push((role(name.as_deref(), port, redirect_ports), listener));
    }
    if !out.is_empty() {
        tracing::info!(sockets = out.len(), "listening on sockets passed by systemd");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn activation_is_only_for_the_named_process() {
        assert_eq!(passed(env(&[]), 7), Ok(None));
        assert_eq!(passed(env(&[("LISTEN_PID", "8"), ("LISTEN_FDS", "2")]), 7), Ok(None));
        assert_eq!(passed(env(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "0")]), 7), Ok(None));
        assert_eq!(
            passed(env(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "https:http")]), 7),
            Ok(Some(Passed { count: 2, names: vec!["https".into(), "http".into()] }))
        );
        assert!(passed(env(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "one")]), 7).is_err());
        assert!(passed(env(&[("LISTEN_PID", "7"), ("LISTEN_FDS", "x")]), 7).is_err());
    }

    #[test]
    fn sockets_are_sorted_by_name_then_port() {
        let redirect: BTreeSet<u16> = [80].into();
        assert_eq!(role(Some("http"), 443, &redirect), Role::Redirect);
        assert_eq!(role(Some("https"), 80, &redirect), Role::Main);
        assert_eq!(role(Some("docket"), 80, &redirect), Role::Redirect);
        assert_eq!(role(None, 443, &redirect), Role::Main);
    }
}
