//! Where the database is: one host, or several as libpq takes them
//! (`postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write`). With several, the
//! server connects to the first that answers (and, with `read-write` or `primary`, accepts
//! writes), and follows a failover: every few seconds it checks that the pool's host still
//! accepts writes, and when it does not, points the pool (and the bus's listener, which reads
//! the pool's options when it reconnects) at the host that does.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The hosts of `DATABASE_URL`, in order, and whether only a writable one will do.
#[derive(Debug, Clone)]
pub struct Targets {
    pub hosts: Vec<PgConnectOptions>,
    pub read_write: bool,
}

impl Targets {
    /// Parses a libpq URL with one host or several. Errors never quote the URL (it may hold a
    /// password).
    pub fn parse(url: &str) -> Result<Targets, &'static str> {
        const BAD: &str = "DATABASE_URL is not a valid postgres:// URL (postgres://user:password@host:port/database, or several hosts as host1:port,host2:port)";
        let (scheme, rest) = url.split_once("://").ok_or(BAD)?;
        let (authority, tail) = rest
            .find(['/', '?'])
            .map_or((rest, ""), |i| rest.split_at(i));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut read_write = false;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    read_write = match value {
                        "any" => false,
                        "read-write" | "primary" => true,
                        _ => return Err(
                            "DATABASE_URL: target_session_attrs must be any, read-write or primary",
                        ),
                    }
                }
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let hosts = hosts
            .split(',')
            .map(|host| {
                format!("{scheme}://{userinfo}{host}{path}{query}")
                    .parse::<PgConnectOptions>()
                    .map_err(|_| BAD)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Targets { hosts, read_write })
    }

    /// The options of every host with `f` applied.
    pub fn map(mut self, f: impl Fn(PgConnectOptions) -> PgConnectOptions) -> Self {
        self.hosts = self.hosts.into_iter().map(f).collect();
        self
    }

    /// The first host that answers within `timeout` and suits (accepts writes when asked to).
    pub async fn pick(&self, timeout: Duration) -> Option<&PgConnectOptions> {
        for host in &self.hosts {
            if self.suits(host, timeout).await {
                return Some(host);
            }
        }
        None
    }

    async fn suits(&self, host: &PgConnectOptions, timeout: Duration) -> bool {
        let probe = async {
            let mut conn = host.connect().await.ok()?;
            let writable = !self.read_write || accepts_writes(&mut conn).await;
            let _ = conn.close().await;
            Some(writable)
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)))
    }

    /// Keeps `pool` on a host that suits until `stop`, when there are several to choose from.
    pub async fn follow(self, pool: PgPool, stop: CancellationToken) {
        if self.hosts.len() < 2 {
            return;
        }
        let mut every = tokio::time::interval(FOLLOW);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let current = pool.connect_options();
            if self.suits(&current, PROBE).await {
                continue;
            }
            if let Some(next) = self.pick(PROBE).await {
                if next.get_host() != current.get_host() || next.get_port() != current.get_port() {
                    tracing::warn!(
                        host = next.get_host(),
                        port = next.get_port(),
                        "the database host no longer answers or takes writes: following it to another host"
                    );
                    pool.set_connect_options(next.clone());
                    crate::metrics::failover();
                }
            }
        }
    }
}

/// How often the pool's host is checked, and how long a check may take.
const FOLLOW: Duration = Duration::from_secs(2);
const PROBE: Duration = Duration::from_secs(2);

/// Whether the session on `conn` accepts writes (libpq's `read-write` test).
async fn accepts_writes(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, String>("SHOW transaction_read_only")
        .fetch_one(conn)
        .await
        .is_ok_and(|v| v == "off")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libpq_url_with_several_hosts_becomes_one_target_per_host() {
        let t = Targets::parse(
            "postgres://u:p%40ss@h1:5432,h2:6432/chat?target_session_attrs=read-write&sslmode=disable",
        )
        .unwrap();
        assert!(t.read_write);
        let hosts: Vec<(String, u16)> = t
            .hosts
            .iter()
            .map(|h| (h.get_host().to_owned(), h.get_port()))
            .collect();
        assert_eq!(hosts, [("h1".into(), 5432), ("h2".into(), 6432)]);
        assert!(t.hosts.iter().all(|h| h.get_database() == Some("chat")));
        let one = Targets::parse("postgres://u@localhost/db").unwrap();
        assert_eq!((one.hosts.len(), one.read_write), (1, false));
        assert!(Targets::parse("postgres://u@h1,h2/db?target_session_attrs=standby").is_err());
        assert!(Targets::parse("not a url").is_err());
    }
}
