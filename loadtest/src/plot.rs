//! `--plot FILE.svg`: latency by percentile as a hand-written SVG. The x axis counts
//! "nines" on a log scale (50%, 90%, 99%, 99.9%, 99.99%: x = -log10(1 - q)), the y axis
//! is microseconds, linear; one line per series (a run's kinds, or the steps of `max`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 1060.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 100.0;
const RIGHT: f64 = 260.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of the chart.
#[derive(Debug)]
pub struct Series<'a> {
    pub label: String,
    pub histogram: &'a Histogram<u64>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1234567` as `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == digits.len() % 3 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A "nice" axis maximum and step (1, 2 or 5 times a power of ten) for `0..=max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = max.max(1.0);
    let raw = max / 6.0;
    let mut magnitude = 1.0;
    while magnitude * 10.0 <= raw {
        magnitude *= 10.0;
    }
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0);
    ((max / step).ceil() * step, step)
}

fn nines_label(n: u32) -> &'static str {
    match n {
        0 => "0%",
        1 => "90%",
        2 => "99%",
        3 => "99.9%",
        4 => "99.99%",
        5 => "99.999%",
        _ => "99.9999%",
    }
}

/// The chart. `marker_us` draws a dashed horizontal line (e.g. the SLO of `max`).
pub fn percentile_svg(title: &str, series: &[Series<'_>], marker_us: Option<u64>) -> String {
    let samples = series.iter().map(|s| s.histogram.len()).max().unwrap_or(0);
    // As many nines as the data can support, at least up to 99.99%.
    let mut nines = 4u32;
    while nines < 6 && samples >= 10u64.pow(nines + 1) {
        nines += 1;
    }
    let x_max = f64::from(nines);
    let quantile = |x: f64| 1.0 - 10f64.powf(-x);
    let top_value = series
        .iter()
        .filter(|s| !s.histogram.is_empty())
        .map(|s| s.histogram.value_at_quantile(quantile(x_max)))
        .max()
        .unwrap_or(1)
        .max(marker_us.unwrap_or(0));
    let (y_max, y_step) = nice_axis(top_value as f64);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - (y / y_max).min(1.05) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="30" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_max + y_step / 2.0 {
        let yy = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e0e0e0"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            yy + 4.0,
            group_thousands(y as u64)
        );
        y += y_step;
    }
    // x ticks: 0%, 50%, then the nines.
    let mut ticks: Vec<(f64, &str)> = vec![(0.0, "0%"), (2f64.log10(), "50%")];
    for n in 1..=nines {
        ticks.push((f64::from(n), nines_label(n)));
    }
    for (x, label) in ticks {
        let xx = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + plot_h + 20.0
        );
    }
    // Axes and their names.
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="black"/>"#,
        TOP + plot_h
    );
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale in nines)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 22.0
    );
    let _ = writeln!(
        s,
        r#"<text x="22" y="{:.1}" text-anchor="middle" transform="rotate(-90 22 {:.1})">latency from scheduled send (µs)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    if let Some(m) = marker_us {
        let yy = py(m as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#555" stroke-dasharray="6 4"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">SLO {m} µs</text>"##,
            LEFT + plot_w - 4.0,
            yy - 5.0
        );
    }
    // The lines and the legend.
    const STEPS: u32 = 400;
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !ser.histogram.is_empty() {
            let points: Vec<String> = (0..=STEPS)
                .map(|k| {
                    let x = x_max * f64::from(k) / f64::from(STEPS);
                    let v = ser.histogram.value_at_quantile(quantile(x));
                    format!("{:.1},{:.1}", px(x), py(v as f64))
                })
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let lx = LEFT + plot_w + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
            lx + 22.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} (max {})</text>"#,
            lx + 28.0,
            ly + 4.0,
            escape(&ser.label),
            crate::report::format_us(ser.histogram.max())
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_nice() {
        assert_eq!(nice_axis(950.0), (1000.0, 200.0));
        assert_eq!(nice_axis(12.0), (12.0, 2.0));
        assert_eq!(nice_axis(0.0), (1.0, 1.0));
        assert_eq!(group_thousands(600_000), "600,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(group_thousands(999), "999");
    }

    #[test]
    fn svg_has_axes_labels_and_a_line_per_series() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..=10_000u64 {
            a.record(100 + v / 10).unwrap();
            b.record(200 + v / 5).unwrap();
        }
        let svg = percentile_svg(
            "check <latency>",
            &[
                Series {
                    label: "check".into(),
                    histogram: &a,
                },
                Series {
                    label: "bulk".into(),
                    histogram: &b,
                },
            ],
            Some(1000),
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        for label in [
            "50%",
            "90%",
            "99%",
            "99.9%",
            "99.99%",
            "check &lt;latency&gt;",
            "SLO 1000",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
    }
}
