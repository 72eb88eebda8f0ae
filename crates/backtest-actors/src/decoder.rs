//! Decoding data frames off the connection's thread.
//!
//! A data connection reads its socket and inflates zstd on the library's
//! background thread; turning a frame's JSON into the typed payload is most
//! of the cost per notification (allocation-heavy serde work), so it runs
//! on a few decoder arbiters instead, a batch of frames per job. A
//! connection keeps a bounded number of jobs in flight and takes their
//! results in submission order, so notifications keep their wire order
//! while reading, decoding and consuming overlap on different cores.
//!
//! [`decode_frame`] is the pure part (a frame's text in, what it is out)
//! and is what runs inline when no decoder arbiter can be started.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use actix_rt::ArbiterHandle;
use bytes::Bytes;
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;
use tokio::sync::oneshot;

use crate::{
    events::ManagedEvent,
    frames::{
        AccountDiffNotification, DataFrame, JsonTransactionPayload, NotificationKind,
        decode_account_diff, decode_transaction, parse_data, parse_notification,
        transaction_signature,
    },
    runtime::spawn_arbiter_thread,
    subscription::DedupKey,
};

/// Fewest decoder arbiters the process starts. With one, the firehose
/// benchmark ran slower than with none (every job waits for the one thread
/// and the hop costs); with two or more it ran 1.5–2x faster, even on a
/// 2-core machine.
const MIN_DECODERS: usize = 2;
/// Most decoder arbiters the process starts (each a thread).
const MAX_DECODERS: usize = 4;

/// One frame handed to a decoder: its text bytes, and whether they came out
/// of the zstd stream (for the error message only).
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    pub bytes: Bytes,
    pub inflated: bool,
}

/// What a data frame turned out to be, before the connection maps the
/// server's subscription id to its program. Short-lived (moved straight on),
/// so the size of the `Notification` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A notification of the connection's kind, decoded.
    Notification {
        subscription: u64,
        slot: u64,
        key: Option<DedupKey>,
        event: ManagedEvent,
    },
    /// `subscriptionComplete` for this subscription id.
    Complete(u64),
    /// An ack, or a notification of another kind.
    Ignore,
    /// Could not be decoded (skipped, with this reason).
    Undecodable(String),
}

/// Decode one data frame of a connection of `kind`. The common case, a
/// notification of that kind, is parsed in one pass straight into its
/// payload type; anything else takes the general envelope parse.
pub(crate) fn decode_frame(kind: NotificationKind, frame: &RawFrame) -> Decoded {
    let Ok(text) = std::str::from_utf8(&frame.bytes) else {
        return Decoded::Undecodable(if frame.inflated {
            "decompressed frame is not UTF-8".into()
        } else {
            "non-UTF-8 text frame".into()
        });
    };
    let typed = match kind {
        NotificationKind::Transaction => {
            transaction_notification(text, kind).map(|(subscription, tx)| {
                let key = transaction_signature(&tx).map(DedupKey::Signature);
                Decoded::Notification {
                    subscription,
                    slot: tx.slot,
                    key,
                    event: ManagedEvent::Transaction(Box::new(tx)),
                }
            })
        }
        NotificationKind::AccountDiff => parse_notification::<AccountDiffNotification>(text, kind)
            .map(|(subscription, diff)| Decoded::Notification {
                subscription,
                slot: diff.context.slot,
                key: Some(DedupKey::Diff(diff.dedup_key())),
                event: ManagedEvent::AccountDiff(diff),
            }),
    };
    if let Some(decoded) = typed {
        return decoded;
    }
    match parse_data(text) {
        // Our kind, but the typed parse failed: say why.
        DataFrame::Notification { method, result, .. } if method == kind => {
            let error = match kind {
                NotificationKind::Transaction => decode_transaction(&result).err(),
                NotificationKind::AccountDiff => decode_account_diff(&result).err(),
            };
            Decoded::Undecodable(format!(
                "notification payload: {}",
                error.map_or_else(|| "unreadable".to_string(), |e| e.to_string())
            ))
        }
        DataFrame::Complete { subscription } => Decoded::Complete(subscription),
        DataFrame::Ack { .. } | DataFrame::Notification { .. } => Decoded::Ignore,
        DataFrame::Other => Decoded::Undecodable("unrecognised data frame".into()),
    }
}

/// A transaction notification, by the fast JSON shape first, else by the
/// wire type's own path (other encodings).
fn transaction_notification(
    text: &str,
    kind: NotificationKind,
) -> Option<(u64, EncodedConfirmedTransactionWithStatusMeta)> {
    parse_notification::<JsonTransactionPayload>(text, kind)
        .and_then(|(subscription, payload)| Some((subscription, payload.try_into().ok()?)))
        .or_else(|| parse_notification::<EncodedConfirmedTransactionWithStatusMeta>(text, kind))
}

fn decode_all(kind: NotificationKind, frames: &[RawFrame]) -> Vec<Decoded> {
    frames
        .iter()
        .map(|frame| decode_frame(kind, frame))
        .collect()
}

/// The decoder arbiters: as many as the machine has cores, within
/// [`MIN_DECODERS`]..=[`MAX_DECODERS`], started on first use and kept for
/// the process. Empty if none could be started (frames are then decoded
/// inline).
fn decoders() -> &'static [ArbiterHandle] {
    static DECODERS: OnceLock<Vec<ArbiterHandle>> = OnceLock::new();
    DECODERS.get_or_init(|| {
        let count = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(MIN_DECODERS, MAX_DECODERS);
        (0..count)
            .map_while(|i| spawn_arbiter_thread(&format!("backtest-decode-{i}")))
            .collect()
    })
}

/// Start the decoder arbiters now; false if none could be started.
pub(crate) fn start() -> bool {
    !decoders().is_empty()
}

/// Decode `frames` on the next decoder arbiter (round robin), or inline if
/// there is none. The result keeps the frames' order.
pub(crate) fn submit(kind: NotificationKind, frames: Vec<RawFrame>) -> PendingDecode {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let decoders = decoders();
    if decoders.is_empty() {
        return PendingDecode::Ready(Some(decode_all(kind, &frames)));
    }
    let arbiter = &decoders[NEXT.fetch_add(1, Ordering::Relaxed) % decoders.len()];
    let (tx, rx) = oneshot::channel();
    // Cloning the frames only counts references; the copy is decoded here
    // if the arbiter has stopped (its thread panicked).
    let job = frames.clone();
    if !arbiter.spawn_fn(move || {
        let _ = tx.send(decode_all(kind, &job));
    }) {
        return PendingDecode::Ready(Some(decode_all(kind, &frames)));
    }
    PendingDecode::Waiting(rx)
}

/// A batch being decoded. Resolves to `None` only if its decoder went away
/// without answering (its thread panicked).
pub(crate) enum PendingDecode {
    Ready(Option<Vec<Decoded>>),
    Waiting(oneshot::Receiver<Vec<Decoded>>),
}

impl Future for PendingDecode {
    type Output = Option<Vec<Decoded>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            PendingDecode::Ready(decoded) => Poll::Ready(decoded.take()),
            PendingDecode::Waiting(rx) => Pin::new(rx).poll(cx).map(Result::ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> RawFrame {
        RawFrame {
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            inflated: false,
        }
    }

    #[test]
    fn completes_acks_and_garbage() {
        let kind = NotificationKind::Transaction;
        let complete = frame(
            r#"{"jsonrpc":"2.0","method":"subscriptionComplete","params":{"subscription":7}}"#,
        );
        assert!(matches!(
            decode_frame(kind, &complete),
            Decoded::Complete(7)
        ));
        let ack = frame(r#"{"jsonrpc":"2.0","id":1,"result":7}"#);
        assert!(matches!(decode_frame(kind, &ack), Decoded::Ignore));
        let diff = frame(
            r#"{"jsonrpc":"2.0","method":"accountDiffNotification","params":{"subscription":7,"result":{}}}"#,
        );
        assert!(matches!(decode_frame(kind, &diff), Decoded::Ignore));
        assert!(matches!(
            decode_frame(kind, &frame("not json")),
            Decoded::Undecodable(reason) if reason == "unrecognised data frame"
        ));
        let broken = frame(
            r#"{"jsonrpc":"2.0","method":"transactionNotification","params":{"subscription":7,"result":{"slot":"x"}}}"#,
        );
        assert!(matches!(
            decode_frame(kind, &broken),
            Decoded::Undecodable(reason) if reason.starts_with("notification payload: ")
        ));
    }

    #[test]
    fn non_utf8_says_where_it_came_from() {
        let raw = |inflated| RawFrame {
            bytes: Bytes::from_static(&[0xff, 0xfe]),
            inflated,
        };
        let kind = NotificationKind::AccountDiff;
        assert!(matches!(
            decode_frame(kind, &raw(false)),
            Decoded::Undecodable(reason) if reason == "non-UTF-8 text frame"
        ));
        assert!(matches!(
            decode_frame(kind, &raw(true)),
            Decoded::Undecodable(reason) if reason == "decompressed frame is not UTF-8"
        ));
    }

    #[test]
    fn batches_keep_their_order_across_decoders() {
        actix_rt::System::new().block_on(async {
            let kind = NotificationKind::Transaction;
            // More batches than decoders, each with its own subscription
            // ids, awaited in submission order.
            let pending: Vec<_> = (0..16u64)
                .map(|batch| {
                    let frames = (0..8u64)
                        .map(|i| {
                            frame(&format!(
                                r#"{{"jsonrpc":"2.0","method":"subscriptionComplete","params":{{"subscription":{}}}}}"#,
                                batch * 8 + i
                            ))
                        })
                        .collect();
                    submit(kind, frames)
                })
                .collect();
            let mut seen = Vec::new();
            for batch in pending {
                for decoded in batch.await.expect("decoded") {
                    match decoded {
                        Decoded::Complete(id) => seen.push(id),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(seen, (0..128).collect::<Vec<_>>());
        });
    }
}
