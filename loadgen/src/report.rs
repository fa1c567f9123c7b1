//! Output: the human table, the JSON report, the HdrHistogram log and an SVG plot of the
//! latency percentile distribution.

use crate::driver::RunResult;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::Path;

/// Percentiles printed everywhere.
pub const QUANTILES: [(f64, &str); 6] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
    (1.0, "max"),
];

/// Formats nanoseconds as µs with one decimal.
#[must_use]
pub fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// Latency percentiles in ns.
#[must_use]
pub fn percentiles(h: &Histogram<u64>) -> Vec<(&'static str, u64)> {
    QUANTILES
        .iter()
        .map(|(q, n)| {
            (
                *n,
                if *q >= 1.0 {
                    h.max()
                } else {
                    h.value_at_quantile(*q)
                },
            )
        })
        .collect()
}

/// The human-readable report.
#[must_use]
pub fn table(title: &str, r: &RunResult) -> String {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = writeln!(
        s,
        "  orders/s (new orders answered)   {:>12.0}",
        r.orders as f64 / secs
    );
    let _ = writeln!(s, "  requests/s (all answered)        {:>12.0}", r.rate());
    let _ = writeln!(
        s,
        "  messages/s                       {:>12.0}   (frames out {:.0}/s, frames in {:.0}/s, reports {:.0}/s)",
        (r.frames_out + r.frames_in) as f64 / secs,
        r.frames_out as f64 / secs,
        r.frames_in as f64 / secs,
        r.reports as f64 / secs
    );
    let _ = writeln!(
        s,
        "  sent {}  answered {}  fills {}  engine rejects {} ({} unknown-order: cancel/replace after fill)  gateway rejects {}  unanswered {}",
        r.sent, r.answered, r.fills, r.rejects, r.unknown_order_rejects, r.gateway_rejects, r.unanswered
    );
    let _ = write!(s, "  latency µs ");
    for (name, v) in percentiles(&r.latency) {
        let _ = write!(s, " {name} {}", us(v));
    }
    s.push('\n');
    s
}

/// Writes the histogram as an HdrHistogram interval log (V2, base64-compressed).
///
/// # Errors
/// I/O or serialisation errors.
pub fn write_hist_log(path: &Path, h: &Histogram<u64>, secs: f64) -> anyhow::Result<()> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    use hdrhistogram::serialization::V2DeflateSerializer;
    let mut file = std::fs::File::create(path)?;
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment("caldera-loadgen latency, nanoseconds")
        .with_max_value_divisor(1000.0)
        .begin_log_with(&mut file, &mut ser)?;
    w.write_histogram(
        h,
        std::time::Duration::ZERO,
        std::time::Duration::from_secs_f64(secs),
        None,
    )?;
    Ok(())
}

/// Writes an SVG chart of latency (µs, log scale) against percentile (log "nines" scale).
///
/// # Errors
/// I/O errors.
pub fn write_plot(path: &Path, series: &[(&str, &Histogram<u64>)]) -> anyhow::Result<()> {
    let (w, h, left, bottom, top, right) = (900.0, 520.0, 80.0, 60.0, 40.0, 30.0);
    let max_nines = 5.0; // up to 99.999%
    let mut max_us: f64 = 1.0;
    for (_, hist) in series {
        max_us = max_us.max(hist.max() as f64 / 1000.0);
    }
    let (lo, hi) = (0.0f64, max_us.log10().ceil().max(1.0));
    let x = |nines: f64| left + (w - left - right) * (nines / max_nines);
    let y =
        |v_us: f64| h - bottom - (h - bottom - top) * ((v_us.max(0.1).log10() - lo) / (hi - lo));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15">Latency by percentile (caldera-loadgen)</text>"#,
        left
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let xi = x(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xi}" y1="{top}" x2="{xi}" y2="{}" stroke="#ddd"/><text x="{xi}" y="{}" text-anchor="middle">{label}</text>"##,
            h - bottom,
            h - bottom + 18.0
        );
    }
    let mut d = lo;
    while d <= hi {
        let v = 10f64.powf(d);
        let yi = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yi}" x2="{}" y2="{yi}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v} µs</text>"##,
            w - right,
            left - 6.0,
            yi + 4.0
        );
        d += 1.0;
    }
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    for (k, (name, hist)) in series.iter().enumerate() {
        let mut pts = String::new();
        let mut nines = 0.0;
        while nines <= max_nines {
            let q = 1.0 - 10f64.powf(-nines);
            let v = hist.value_at_quantile(q) as f64 / 1000.0;
            let _ = write!(pts, "{:.1},{:.1} ", x(nines), y(v));
            nines += 0.05;
        }
        let c = colors[k % colors.len()];
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{pts}"/><text x="{}" y="{}" fill="{c}">{name}</text>"#,
            left + 10.0,
            top + 16.0 * (k as f64 + 1.0)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text></svg>"#,
        (left + w - right) / 2.0,
        h - 12.0
    );
    std::fs::write(path, s)?;
    Ok(())
}
