//! Scenario 1, firehose: a prebuilt stream of notifications written as fast
//! as the socket takes it, then `subscriptionComplete`. Figure: notifications
//! per second from the subscribe request to the last notification handed to
//! the consumer, for ours, the seed crate, and the in-process decode limit.

use std::sync::Arc;

use serde_json::json;

use crate::{
    Settings,
    clients::{self, Impl, Target},
    corpus::Corpus,
    limit,
    server::{BenchServer, Codec, DataPlan, prebuild},
    stats::{Better, Figure, median},
};

pub fn run(settings: &Settings, corpus: &Corpus, codec: Codec) -> Result<Figure, String> {
    let n = settings.firehose_count;
    let stream = Arc::new(prebuild(corpus, n, codec).map_err(|e| e.to_string())?);
    let wire_bytes = stream.len();
    let server =
        BenchServer::start(DataPlan::Prebuilt(stream.clone())).map_err(|e| e.to_string())?;
    let target = Target {
        control_url: server.control_url(),
        rpc_endpoint: server.rpc_endpoint(),
        program: corpus.program.clone(),
    };
    let (mut ours, mut seed, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_first, mut seed_first) = (Vec::new(), Vec::new());
    for round in 0..settings.runs {
        // Alternate which client goes first so drift hits both alike.
        let order = if round % 2 == 0 {
            [Impl::Ours, Impl::Seed]
        } else {
            [Impl::Seed, Impl::Ours]
        };
        for which in order.into_iter().filter(|w| settings.clients.contains(w)) {
            let run = clients::run(which, &target, &mut |tx| {
                std::hint::black_box(tx);
            })?;
            if run.received != n {
                return Err(format!(
                    "firehose {}: {} got {} of {n}",
                    codec.name(),
                    which.name(),
                    run.received
                ));
            }
            let rate = n as f64 / (run.finished - run.started).as_secs_f64();
            eprintln!(
                "firehose {} {} run {}: {rate:.0}/s",
                codec.name(),
                which.name(),
                round + 1
            );
            let first_ms = run
                .first
                .map_or(f64::NAN, |t| (t - run.started).as_secs_f64() * 1e3);
            match which {
                Impl::Ours => (ours.push(rate), ours_first.push(first_ms)),
                Impl::Seed => (seed.push(rate), seed_first.push(first_ms)),
            };
        }
        let (decoded, elapsed) = limit::decode_stream(&stream)?;
        if decoded != n {
            return Err(format!("limit decoded {decoded} of {n}"));
        }
        bare.push(n as f64 / elapsed.as_secs_f64());
    }
    Ok(Figure {
        scenario: "firehose",
        codec: Some(codec.name()),
        label: format!("firehose ({}), {n} notifications", codec.name()),
        unit: "notifications/s",
        better: Better::Higher,
        ours: median(&ours),
        seed_crate: Some(median(&seed)).filter(|v| v.is_finite()),
        limit: Some(median(&bare)),
        extra: json!({
            "notifications": n,
            "mean_wire_bytes_per_notification": wire_bytes as f64 / n as f64,
            "subscribe_to_first_ms": {"ours": median(&ours_first), "seed_crate": median(&seed_first)},
            "runs_ours": ours, "runs_seed_crate": seed, "runs_limit": bare,
        }),
    })
}
