//! Abuse limits: how often one client address may sign up or try to log in, how often one
//! account may be tried from one address and from all of them, and the budget each user's sends, syncs and read markers share over
//! all their sockets and HTTP. Each limit is a keyed GCRA limiter (`governor`); a refusal says
//! when to come back, and is counted by limit.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::ThrottleConfig;
use crate::error::{AppError, AppResult};
use crate::ids::UserId;
use crate::metrics as m;

/// One keyed limit; `None` when configured off (a rate of 0).
struct Limit<K: Hash + Eq + Clone> {
    name: &'static str,
    limiter: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(name: &'static str, quota: Option<Quota>) -> Self {
        metrics::counter!(m::RATE_LIMITED, "limit" => name).increment(0);
        Self {
            name,
            limiter: quota.map(RateLimiter::keyed),
        }
    }

    /// Takes one unit of `key`'s budget, or says how long until there is one.
    fn check(&self, key: &K) -> AppResult<()> {
        self.check_n(key, NonZeroU32::MIN)
    }

    /// Takes `n` units of `key`'s budget at once (at most its burst), or says how long until
    /// there are.
    fn check_n(&self, key: &K, n: NonZeroU32) -> AppResult<()> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let refused = |wait| {
            metrics::counter!(m::RATE_LIMITED, "limit" => self.name).increment(1);
            AppError::RateLimited(wait)
        };
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(refused(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            // More than the burst: take what the burst allows.
            Err(governor::InsufficientCapacity(burst)) => match NonZeroU32::new(burst) {
                Some(burst) if burst < n => self.check_n(key, burst),
                _ => Err(refused(Duration::from_secs(1))),
            },
        }
    }

    /// Forgets keys whose budget is full again, so the map holds only recent clients.
    fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Every abuse limit of the server.
pub struct Throttles {
    /// Attempts on one account from one address.
    login_account: Limit<(String, IpAddr)>,
    /// Attempts on one account from addresses it never logged in from.
    login_account_total: Limit<String>,
    /// Where each account logged in from lately: those addresses skip `login_account_total`,
    /// so guessing from elsewhere cannot lock the owner out.
    known: DashMap<(String, IpAddr), Instant>,
    login_ip: Limit<IpAddr>,
    signup_ip: Limit<IpAddr>,
    user: Limit<UserId>,
    typing: Limit<UserId>,
    social: Limit<UserId>,
}

/// How long a successful login keeps its address known, and how many are kept.
const KNOWN_FOR: Duration = Duration::from_secs(30 * 86_400);
const KNOWN_MAX: usize = 1_000_000;

/// `per` units per `period` with bursts of `burst`; `None` for a rate of 0 (no limit).
fn quota(per: u32, period: Duration, burst: u32) -> Option<Quota> {
    let per = NonZeroU32::new(per)?;
    let quota = Quota::with_period(period / per.get())?;
    Some(quota.allow_burst(NonZeroU32::new(burst).unwrap_or(per)))
}

impl Throttles {
    pub fn new(config: &ThrottleConfig) -> Arc<Self> {
        let minute = Duration::from_secs(60);
        let second = Duration::from_secs(1);
        Arc::new(Self {
            login_account: Limit::new(
                "login_account",
                quota(
                    config.login_account_per_min,
                    minute,
                    config.login_account_burst,
                ),
            ),
            login_account_total: Limit::new(
                "login_account_total",
                quota(
                    config.login_account_total_per_min,
                    minute,
                    config.login_account_total_per_min,
                ),
            ),
            known: DashMap::new(),
            login_ip: Limit::new(
                "login_ip",
                quota(config.login_ip_per_min, minute, config.login_ip_per_min),
            ),
            signup_ip: Limit::new(
                "signup_ip",
                quota(config.signup_ip_per_min, minute, config.signup_ip_per_min),
            ),
            user: Limit::new(
                "user",
                quota(
                    config.user_per_sec,
                    second,
                    config.user_per_sec.saturating_mul(2),
                ),
            ),
            social: Limit::new(
                "social",
                quota(config.social_per_min, minute, config.social_per_min),
            ),
            typing: Limit::new(
                "typing",
                quota(
                    config.typing_per_sec.max(1),
                    second,
                    config.typing_per_sec.max(1).saturating_mul(2),
                ),
            ),
        })
    }

    /// A login attempt (or a password check) for `username` from `ip`; runs before the password
    /// is checked, so a right password past the limit waits like a wrong one. Guesses from one
    /// address spend that address's budget for the account, not the owner's; all addresses
    /// together have a higher ceiling, which addresses the account logged in from lately skip.
    pub fn login(&self, ip: IpAddr, username: &str) -> AppResult<()> {
        let account = username.to_lowercase();
        self.login_ip.check(&ip)?;
        let key = (account, ip);
        self.login_account.check(&key)?;
        if self.known.contains_key(&key) {
            return Ok(());
        }
        self.login_account_total.check(&key.0)
    }

    /// `username` logged in from `ip`: that address keeps its way in while others guess.
    pub fn logged_in(&self, ip: IpAddr, username: &str) {
        if self.known.len() < KNOWN_MAX {
            self.known
                .insert((username.to_lowercase(), ip), Instant::now());
        }
    }

    /// A refresh token shown from `ip`: it spends from the address's login budget.
    pub fn refresh(&self, ip: IpAddr) -> AppResult<()> {
        self.login_ip.check(&ip)
    }

    pub fn signup(&self, ip: IpAddr) -> AppResult<()> {
        self.signup_ip.check(&ip)
    }

    /// One send, sync or read marker of `user`, over any socket or HTTP.
    pub fn user_action(&self, user: UserId) -> AppResult<()> {
        self.user.check(&user)
    }

    /// One friend request, group creation or membership change of `user`: what reaches other
    /// people's lists, so one user cannot flood them.
    pub fn social(&self, user: UserId) -> AppResult<()> {
        self.social.check(&user)
    }

    /// One typing indicator of `user`, over all their sockets (apart from the user's budget).
    pub fn typing(&self, user: UserId) -> AppResult<()> {
        self.typing.check(&user)
    }

    /// `units` of `user`'s budget for one frame that costs more than one (a `resume`, a
    /// large ping).
    pub fn user_actions(&self, user: UserId, units: u32) -> AppResult<()> {
        self.user
            .check_n(&user, NonZeroU32::new(units).unwrap_or(NonZeroU32::MIN))
    }

    /// Forgets idle keys every minute until `stop`.
    pub async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {
                    self.login_account.forget_idle();
                    self.login_account_total.forget_idle();
                    self.known.retain(|_, at| at.elapsed() < KNOWN_FOR);
                    self.login_ip.forget_idle();
                    self.signup_ip.forget_idle();
                    self.user.forget_idle();
                    self.typing.forget_idle();
                    self.social.forget_idle();
                }
            }
        }
    }
}
