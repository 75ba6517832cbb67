//! A hand-written SVG of the run's timeline: latency, moves per second, packets per second,
//! and CPU, one panel each, with time on the x axis.

use std::fmt::Write;

use crate::metrics::Point;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 170.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 56.0;
const GAP: f64 = 40.0;

/// A named line.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    values: Vec<(f64, Option<f64>)>,
}

/// Render the timeline as an SVG document, with a title and a smaller subtitle line.
pub fn render(title: &str, subtitle: &str, points: &[Point]) -> String {
    let t_max = points.iter().map(|p| p.t).fold(1.0_f64, f64::max);
    let col = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        points.iter().map(|p| (p.t, f(p))).collect()
    };
    let mut panels: Vec<(&str, bool, Vec<Series<'_>>)> = vec![
        (
            "move-to-echo latency (ms, log scale)",
            true,
            vec![
                Series {
                    name: "p50",
                    color: "#2563eb",
                    values: col(&|p| p.p50_ms),
                },
                Series {
                    name: "p99",
                    color: "#dc2626",
                    values: col(&|p| p.p99_ms),
                },
            ],
        ),
        (
            "moves per second",
            false,
            vec![
                Series {
                    name: "sent",
                    color: "#9333ea",
                    values: col(&|p| Some(p.sent_per_s)),
                },
                Series {
                    name: "acknowledged",
                    color: "#16a34a",
                    values: col(&|p| Some(p.acked_per_s)),
                },
            ],
        ),
        (
            "frames received per second",
            false,
            vec![Series {
                name: "frames/s",
                color: "#0891b2",
                values: col(&|p| Some(p.packets_per_s)),
            }],
        ),
    ];
    if points
        .iter()
        .any(|p| p.server_cpu.is_some() || p.loadgen_cpu.is_some())
    {
        panels.push((
            "CPU (% of one core)",
            false,
            vec![
                Series {
                    name: "server",
                    color: "#ea580c",
                    values: col(&|p| p.server_cpu),
                },
                Series {
                    name: "load generator",
                    color: "#4f46e5",
                    values: col(&|p| p.loadgen_cpu),
                },
            ],
        ));
    }
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>
<text x="{LEFT}" y="40" font-size="11" fill="#555">{}</text>
"##,
        escape(title),
        escape(subtitle)
    );
    for (i, (name, log, series)) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_HEIGHT + GAP) + 14.0;
        panel(&mut svg, y0, name, *log, series, t_max);
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(svg: &mut String, y0: f64, title: &str, log: bool, series: &[Series<'_>], t_max: f64) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let (x0, y1) = (LEFT, y0 + PANEL_HEIGHT);
    let values = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().filter_map(|(_, v)| *v))
    };
    let _ = writeln!(
        svg,
        r##"<text x="{x0}" y="{}" font-weight="bold">{}</text>"##,
        y0 - 4.0,
        escape(title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##
    );
    // y scale
    let (lo, hi, ticks): (f64, f64, Vec<f64>) = if log {
        let min = values().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        let max = values().fold(0.0_f64, f64::max);
        let (min, max) = if min.is_finite() {
            (min, max)
        } else {
            (0.1, 10.0)
        };
        let lo = 10f64.powf(min.max(1e-3).log10().floor());
        let hi = 10f64.powf(max.max(lo * 10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut t = lo;
        while t <= hi * 1.0001 {
            ticks.push(t);
            t *= 10.0;
        }
        (lo.log10(), hi.log10(), ticks)
    } else {
        let max = values().fold(0.0_f64, f64::max);
        let step = nice_step(max.max(1.0) / 4.0);
        let hi = (max.max(1.0) / step).ceil() * step;
        let ticks = (0..=((hi / step).round() as usize))
            .map(|k| k as f64 * step)
            .collect();
        (0.0, hi, ticks)
    };
    let ymap = |v: f64| {
        let v = if log { v.max(1e-9).log10() } else { v };
        y1 - (v - lo) / (hi - lo).max(1e-9) * PANEL_HEIGHT
    };
    let xmap = |t: f64| x0 + t / t_max * plot_w;
    for t in &ticks {
        let y = ymap(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + plot_w,
            x0 - 5.0,
            y + 4.0,
            fmt_tick(*t)
        );
    }
    // x ticks
    let xstep = nice_step(t_max / 8.0);
    let mut t = 0.0;
    while t <= t_max + 1e-9 {
        let x = xmap(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
            y1 + 4.0,
            y1 + 16.0,
            fmt_tick(t)
        );
        t += xstep;
    }
    // lines (broken where a value is missing)
    for (k, s) in series.iter().enumerate() {
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, svg: &mut String| {
            if run.len() == 1 {
                let (x, y) = run[0].split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x}" cy="{y}" r="2" fill="{}"/>"#,
                    s.color
                );
            } else if run.len() > 1 {
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                    s.color,
                    run.join(" ")
                );
            }
            run.clear();
        };
        for (t, v) in &s.values {
            match v {
                Some(v) => run.push(format!("{:.1},{:.1}", xmap(*t), ymap(*v))),
                None => flush(&mut run, svg),
            }
        }
        flush(&mut run, svg);
        let ly = y0 + 14.0 + k as f64 * 16.0;
        let lx = x0 + plot_w + 12.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            s.color,
            lx + 24.0,
            ly + 4.0,
            escape(s.name)
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `x`.
fn nice_step(x: f64) -> f64 {
    let x = x.max(1e-9);
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= x {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{}M", trim(v / 1_000_000.0))
    } else if v >= 10_000.0 {
        format!("{}k", trim(v / 1000.0))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t: f64) -> Point {
        Point {
            t,
            packets_per_s: 1000.0 * t,
            bytes_per_s: 0.0,
            sent_per_s: 150.0,
            acked_per_s: 149.0,
            p50_ms: (t > 1.0).then_some(0.8),
            p99_ms: (t > 1.0).then_some(4.2),
            server_cpu: Some(30.0),
            server_rss_kib: Some(10_000),
            loadgen_cpu: Some(20.0),
        }
    }

    #[test]
    fn renders_a_well_formed_svg() {
        let pts: Vec<Point> = (1..=20).map(|t| point(t as f64)).collect();
        let svg = render("moves <test>", "clients=2", &pts);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("moves &lt;test&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 7);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_timeline_still_renders() {
        let svg = render("empty", "", &[]);
        assert!(svg.contains("</svg>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn steps() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(0.15), 0.2);
        assert_eq!(nice_step(1200.0), 2000.0);
        assert_eq!(fmt_tick(25_000.0), "25k");
        assert_eq!(fmt_tick(2.5), "2.5");
    }
}
