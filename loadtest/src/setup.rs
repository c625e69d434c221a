//! Set-up through the public HTTP API: accounts, friendships and chats, bounded in parallel.
//! Its time is reported apart from the load.

use anyhow::{bail, Context};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use crate::cli::{Args, Scenario};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub token: String,
}

/// Who is in which chat.
#[derive(Debug, Clone)]
pub struct Layout {
    pub accounts: Vec<Account>,
    /// Chat id and the indexes of its members in `accounts`.
    pub chats: Vec<(i64, Vec<usize>)>,
    /// Accounts (after the driven ones) that connect and never read.
    pub slow: Vec<usize>,
}

impl Layout {
    /// The chats each account belongs to.
    pub fn chats_of(&self) -> Vec<Vec<i64>> {
        let mut of = vec![Vec::new(); self.accounts.len()];
        for (chat, members) in &self.chats {
            for &m in members.iter().filter(|m| !self.slow.contains(m)) {
                of[m].push(*chat);
            }
        }
        of
    }
}

pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let value: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {value}");
        }
        Ok(value)
    }
}

/// The members of each chat, as indexes into the accounts.
fn plan(args: &Args) -> Vec<Vec<usize>> {
    let n = args.connections;
    let layout = match args.scenario {
        Scenario::Burst => args.burst_layout,
        other => other,
    };
    match layout {
        Scenario::Room => vec![(0..n).collect()],
        Scenario::Idle => Vec::new(),
        Scenario::Chat
        | Scenario::Burst
        | Scenario::Reconnect
        | Scenario::Slow
        | Scenario::Storm => {
            let m = args.members_per_chat.clamp(2, n);
            (0..args.chats)
                .map(|c| (0..m).map(|j| (c * m + j) % n).collect())
                .collect()
        }
    }
}

/// Creates the accounts, friendships and chats; usernames are `{prefix}_{i}`.
pub async fn run(args: &Args, prefix: &str) -> anyhow::Result<Layout> {
    let api = Api::new(&args.url);
    let par = args.setup_parallelism.max(1);
    let reuse = args.reuse;
    let accounts: Vec<Account> = stream::iter(0..args.accounts() + args.slow_consumers)
        .map(|i| {
            let api = &api;
            async move {
                let body = json!({ "username": format!("{prefix}_{i}"), "password": "load-test-password" });
                let v = match api.call(reqwest::Method::POST, "/api/auth/signup", None, body.clone()).await {
                    // `--reuse`: the account is there from an earlier run with this run id.
                    Err(e) if reuse && e.to_string().contains("username_taken") => {
                        api.call(reqwest::Method::POST, "/api/auth/login", None, body).await?
                    }
                    other => other?,
                };
                Ok::<_, anyhow::Error>(Account {
                    id: v["user"]["id"].as_i64().context("user id")?,
                    token: v["token"].as_str().context("token")?.to_owned(),
                })
            }
        })
        .buffered(par)
        .try_collect()
        .await?;

    let mut plan = plan(args);
    let slow: Vec<usize> = (args.accounts()..args.accounts() + args.slow_consumers).collect();
    if let Some(first) = plan.first_mut() {
        first.extend(&slow);
    }
    // Each chat's first member befriends the others (once per pair), then creates the chat.
    let mut pairs: Vec<(usize, usize)> = plan
        .iter()
        .flat_map(|ms| ms[1..].iter().map(move |&o| (ms[0], o)))
        .filter(|(a, b)| a != b)
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    stream::iter(pairs)
        .map(|(a, b)| {
            let (api, accounts) = (&api, &accounts);
            async move {
                let body = json!({ "username": format!("{prefix}_{b}") });
                let v = api
                    .call(
                        reqwest::Method::POST,
                        "/api/friends/requests",
                        Some(&accounts[a].token),
                        body,
                    )
                    .await;
                let id = match v {
                    Ok(v) => v["request"]["id"].as_i64().context("request id")?,
                    Err(e) if e.to_string().contains("already_friends") => return Ok(()),
                    Err(e) => return Err(e),
                };
                let path = format!("/api/friends/requests/{id}/accept");
                api.call(
                    reqwest::Method::POST,
                    &path,
                    Some(&accounts[b].token),
                    json!({}),
                )
                .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(par)
        .try_collect::<Vec<()>>()
        .await?;

    let chats = stream::iter(plan)
        .map(|members| {
            let (api, accounts) = (&api, &accounts);
            async move {
                let ids: Vec<i64> = members[1..].iter().map(|&m| accounts[m].id).collect();
                let body = json!({ "title": "load", "member_ids": ids });
                let v = api
                    .call(
                        reqwest::Method::POST,
                        "/api/chats",
                        Some(&accounts[members[0]].token),
                        body,
                    )
                    .await?;
                let mut members = members;
                members.sort_unstable();
                members.dedup();
                Ok::<_, anyhow::Error>((v["chat"]["id"].as_i64().context("chat id")?, members))
            }
        })
        .buffered(par)
        .try_collect()
        .await?;
    Ok(Layout {
        accounts,
        chats,
        slow,
    })
}
