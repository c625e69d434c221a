//! The open-loop sender: sends go out at their scheduled times whether or not anything was
//! answered, and each body carries its intended send time so latency counts from the schedule.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use rand::Rng;
use rand_distr::{Distribution, Exp};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use xfchat::ids::ChatId;
use xfchat::protocol::{ClientFrame, Codec};

use crate::cli::Arrival;

/// Intended send times, in seconds after the start: evenly spaced or a Poisson process, from a
/// random phase, until `total`.
pub struct Schedule {
    next: f64,
    mean: f64,
    exp: Option<Exp<f64>>,
    total: f64,
}

impl Schedule {
    pub fn new(rate: f64, arrival: Arrival, total: Duration) -> Self {
        let mean = 1.0 / rate;
        let exp = (arrival == Arrival::Poisson).then(|| Exp::new(rate).expect("positive rate"));
        let next = rand::thread_rng().gen_range(0.0..mean);
        Self {
            next,
            mean,
            exp,
            total: total.as_secs_f64(),
        }
    }
}

impl Iterator for Schedule {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        let at = self.next;
        if at >= self.total {
            return None;
        }
        self.next += match &self.exp {
            Some(exp) => exp.sample(&mut rand::thread_rng()),
            None => self.mean,
        };
        Some(at)
    }
}

/// What to send and where the harness keeps count.
pub struct Sender<'a> {
    pub codec: Codec,
    pub chats: &'a [i64],
    pub body_bytes: usize,
    pub outstanding: &'a AtomicI64,
}

/// Body of a message meant to be sent `at` seconds after the start: the intended time in µs,
/// a colon, then padding up to the body size.
pub fn body(at: f64, body_bytes: usize) -> String {
    let stamp = ((at * 1e6) as u64).to_string();
    let pad = body_bytes.saturating_sub(stamp.len() + 1);
    format!("{stamp}:{}", "x".repeat(pad))
}

impl Sender<'_> {
    /// Sends one message per scheduled time until the schedule ends or the socket fails;
    /// returns how many were sent.
    pub async fn run<S: Sink<WsMessage> + Unpin>(
        &self,
        sink: &mut S,
        schedule: Schedule,
        start: Instant,
    ) -> u64 {
        let mut sent = 0;
        if self.chats.is_empty() {
            return 0;
        }
        for at in schedule {
            tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
            let chat = self.chats[rand::thread_rng().gen_range(0..self.chats.len())];
            let frame = ClientFrame::Send {
                chat_id: ChatId(chat),
                client_msg_id: uuid::Uuid::new_v4(),
                body: body(at, self.body_bytes),
                reply_to: None,
                attachments: Vec::new(),
            };
            self.outstanding.fetch_add(1, Ordering::Relaxed);
            if sink.send(self.codec.encode(&frame)).await.is_err() {
                self.outstanding.fetch_sub(1, Ordering::Relaxed);
                break;
            }
            sent += 1;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_open_loop_scheduler_keeps_its_schedule_when_acks_stall() {
        // A server that takes every frame and never answers.
        let (mut sink, mut frames) = futures_channel::mpsc::unbounded::<WsMessage>();
        let outstanding = AtomicI64::new(0);
        let sender = Sender {
            codec: Codec::Json,
            chats: &[1],
            body_bytes: 50,
            outstanding: &outstanding,
        };
        let start = Instant::now();
        let schedule = Schedule::new(200.0, Arrival::Fixed, Duration::from_secs(2));
        let sent = sender.run(&mut sink, schedule, start).await;
        assert_eq!(
            sent, 400,
            "every scheduled send went out with no answer to any"
        );
        assert_eq!(outstanding.load(Ordering::Relaxed), 400);
        assert!(start.elapsed() <= Duration::from_secs(2), "and on time");
        let mut stamps = Vec::new();
        while let Ok(msg) = frames.try_recv() {
            let frame: ClientFrame = Codec::decode(&msg).unwrap();
            let ClientFrame::Send { body, .. } = frame else {
                panic!()
            };
            stamps.push(body.split_once(':').unwrap().0.parse::<u64>().unwrap());
        }
        let gaps: Vec<u64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|&g| (4_999..=5_001).contains(&g)),
            "5 ms apart: {gaps:?}"
        );
    }

    #[test]
    fn poisson_arrivals_average_the_rate() {
        let n = Schedule::new(1000.0, Arrival::Poisson, Duration::from_secs(10)).count();
        assert!((9_000..11_000).contains(&n), "{n}");
    }
}
