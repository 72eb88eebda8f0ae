//! `backtest ranges`: `/available-ranges` as a table.

use std::time::Duration;

use backtest_server::{RunningServer, ServerConfig};
use simulator_api::AvailableRange;

use crate::{CliError, RangesArgs};

const TIMEOUT: Duration = Duration::from_secs(30);

pub fn ranges(args: RangesArgs) -> Result<u8, CliError> {
    let extra_roots = match &args.ca_cert {
        Some(path) => crate::tls::read_ca_cert(path)?,
        None => Vec::new(),
    };
    let (server, base) = match &args.url {
        Some(url) => {
            let control = backtest_actors::url::control_url(url)
                .map_err(|e| CliError::usage(format!("bad --url: {e}")))?;
            (None, backtest_actors::url::http_base(&control))
        }
        None => {
            let server = RunningServer::spawn(
                ServerConfig::default(),
                "127.0.0.1:0".parse().expect("ip"),
            )
            .map_err(|e| CliError::failed(format!("cannot start the embedded server: {e}")))?;
            eprintln!(
                "no --url: listing the embedded reference server's ranges ({})",
                server.control_url()
            );
            let base = server.http_base();
            (Some(server), base)
        }
    };
    let url = format!("{base}/available-ranges");
    let ranges = actix_rt::System::new().block_on(fetch(&url, &extra_roots))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ranges).map_err(|e| CliError::failed(e.to_string()))?
        );
    } else {
        print!("{}", table(&ranges));
    }
    if let Some(server) = server {
        server.stop();
    }
    Ok(0)
}

async fn fetch(url: &str, extra_roots: &[Vec<u8>]) -> Result<Vec<AvailableRange>, CliError> {
    let tls = crate::tls::client_config(extra_roots).map_err(CliError::usage)?;
    let client = awc::Client::builder()
        .timeout(TIMEOUT)
        .connector(awc::Connector::new().rustls_0_23(tls))
        .finish();
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| CliError::failed(format!("GET {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(CliError::failed(format!(
            "GET {url}: HTTP {}",
            response.status()
        )));
    }
    let body = response
        .body()
        .limit(16 << 20)
        .await
        .map_err(|e| CliError::failed(format!("GET {url}: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| CliError::failed(format!("GET {url}: not a list of ranges: {e}")))
}

/// The ranges as an aligned text table.
pub fn table(ranges: &[AvailableRange]) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows = vec![[
        "START".to_string(),
        "END".to_string(),
        "SLOTS".to_string(),
        "START UTC".to_string(),
        "END UTC".to_string(),
    ]];
    for r in ranges {
        rows.push([
            r.bundle_start_slot.to_string(),
            opt(r.max_bundle_end_slot),
            opt(r.max_bundle_size),
            text(&r.bundle_start_slot_utc),
            text(&r.max_bundle_end_slot_utc),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!("{} ranges\n", ranges.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let ranges = vec![AvailableRange {
            bundle_start_slot: 1000,
            bundle_start_slot_utc: None,
            max_bundle_end_slot: Some(10999),
            max_bundle_end_slot_utc: None,
            max_bundle_size: Some(10000),
        }];
        assert_eq!(
            table(&ranges),
            "START  END    SLOTS  START UTC  END UTC\n1000   10999  10000  -          -\n1 ranges\n"
        );
    }
}
