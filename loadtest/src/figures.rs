//! The figures of one measured run (or step), with its HDR histograms serialised so that the
//! reports of several harness processes can be merged exactly.

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency histograms in microseconds, up to one minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut bytes)
        .expect("serialise a histogram");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
    let mut full = histogram();
    full.add(&h)?;
    Ok(full)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Counts, rates and latencies of one measured stretch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Offered messages per second.
    pub rate: f64,
    pub measured_seconds: f64,
    pub connections: usize,
    pub connection_failures: usize,
    pub sent: u64,
    pub acked: u64,
    /// Sends with neither ack nor error by the end of the drain.
    pub unanswered: u64,
    pub acked_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub ack_latency: Percentiles,
    pub delivery_latency: Percentiles,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub stalled_closes: u64,
    /// Base64 HDR V2 encodings (µs) of send->ack and send->delivery.
    pub ack_histogram: String,
    pub delivery_histogram: String,
}

/// The raw material of [`Figures`].
pub struct Recorded {
    pub rate: f64,
    pub measured_seconds: f64,
    pub connections: usize,
    pub connection_failures: usize,
    pub sent: u64,
    pub acked: u64,
    pub unanswered: u64,
    pub acks_measured: u64,
    pub deliveries_measured: u64,
    pub ack_us: Histogram<u64>,
    pub delivery_us: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub closes: BTreeMap<String, u64>,
    pub stalled_closes: u64,
}

impl From<Recorded> for Figures {
    fn from(r: Recorded) -> Self {
        let per_sec = |n: u64| {
            if r.measured_seconds > 0.0 {
                n as f64 / r.measured_seconds
            } else {
                0.0
            }
        };
        Figures {
            rate: r.rate,
            measured_seconds: r.measured_seconds,
            connections: r.connections,
            connection_failures: r.connection_failures,
            sent: r.sent,
            acked: r.acked,
            unanswered: r.unanswered,
            acked_per_sec: per_sec(r.acks_measured),
            deliveries_per_sec: per_sec(r.deliveries_measured),
            ack_latency: (&r.ack_us).into(),
            delivery_latency: (&r.delivery_us).into(),
            errors: r.errors,
            closes: r.closes,
            stalled_closes: r.stalled_closes,
            ack_histogram: encode(&r.ack_us),
            delivery_histogram: encode(&r.delivery_us),
        }
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

impl Figures {
    /// Figures of processes that ran side by side over the same stretch: counts and rates add
    /// up, latencies come from the merged histograms.
    pub fn merge(parts: &[Figures]) -> anyhow::Result<Figures> {
        let (mut ack, mut delivery) = (histogram(), histogram());
        let (mut errors, mut closes) = (BTreeMap::new(), BTreeMap::new());
        for p in parts {
            ack.add(decode(&p.ack_histogram)?)?;
            delivery.add(decode(&p.delivery_histogram)?)?;
            add_counts(&mut errors, &p.errors);
            add_counts(&mut closes, &p.closes);
        }
        let sum = |f: fn(&Figures) -> u64| parts.iter().map(f).sum::<u64>();
        let measured_seconds = parts.iter().map(|p| p.measured_seconds).fold(0.0, f64::max);
        Ok(Figures {
            rate: parts.iter().map(|p| p.rate).sum(),
            measured_seconds,
            connections: parts.iter().map(|p| p.connections).sum(),
            connection_failures: parts.iter().map(|p| p.connection_failures).sum(),
            sent: sum(|p| p.sent),
            acked: sum(|p| p.acked),
            unanswered: sum(|p| p.unanswered),
            acked_per_sec: parts.iter().map(|p| p.acked_per_sec).sum(),
            deliveries_per_sec: parts.iter().map(|p| p.deliveries_per_sec).sum(),
            ack_latency: (&ack).into(),
            delivery_latency: (&delivery).into(),
            errors,
            closes,
            stalled_closes: sum(|p| p.stalled_closes),
            ack_histogram: encode(&ack),
            delivery_histogram: encode(&delivery),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(values: &[u64]) -> Recorded {
        let mut ack = histogram();
        for &v in values {
            ack.record(v).unwrap();
        }
        Recorded {
            rate: 100.0,
            measured_seconds: 10.0,
            connections: 5,
            connection_failures: 0,
            sent: values.len() as u64,
            acked: values.len() as u64,
            unanswered: 0,
            acks_measured: values.len() as u64,
            deliveries_measured: 2 * values.len() as u64,
            delivery_us: ack.clone(),
            ack_us: ack,
            errors: BTreeMap::from([("rate_limited".to_owned(), 1)]),
            closes: BTreeMap::new(),
            stalled_closes: 0,
        }
    }

    #[test]
    fn the_merge_of_two_reports_equals_one_report_over_both_recordings() {
        let a: Vec<u64> = (1..=1000).map(|i| i * 37 % 5000 + 100).collect();
        let b: Vec<u64> = (1..=3000).map(|i| i * 91 % 90_000 + 2_000).collect();
        let merged = Figures::merge(&[recorded(&a).into(), recorded(&b).into()]).unwrap();
        let both: Figures = recorded(&[a, b].concat()).into();
        assert_eq!(merged.ack_latency, both.ack_latency);
        assert_eq!(merged.delivery_latency, both.delivery_latency);
        assert_eq!((merged.sent, merged.acked), (both.sent, both.acked));
        assert_eq!(merged.acked_per_sec, both.acked_per_sec);
        assert_eq!(merged.errors["rate_limited"], 2);
        assert_eq!(merged.ack_histogram, both.ack_histogram);
    }
}
