//! `report.html`: verdicts, a latency plot and a throughput plot shaded by nemesis intervals,
//! and a per-process timeline, as inline SVG (no scripts, no external files).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::history::{Kind, Op};
use crate::nemesis::{Interval, NemesisKind};

const W: f64 = 1100.0;
const LEFT: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Ok => "#2a9d3a",
        Kind::Fail => "#d62728",
        Kind::Info => "#ff9f1c",
        Kind::Invoke => "#999",
    }
}

fn nemesis_color(k: NemesisKind) -> &'static str {
    match k {
        NemesisKind::Kill => "#f4a4a4",
        NemesisKind::Pause => "#a4c8f4",
        NemesisKind::Partition => "#f4dca4",
        NemesisKind::Loss => "#d9b3f0",
        NemesisKind::Delay => "#b3f0d0",
        NemesisKind::Clock => "#d0d0d0",
        NemesisKind::Member => "#f0b3d9",
    }
}

/// One op for plotting: (start s, end s or None, kind, process, label).
struct P {
    start: f64,
    end: Option<f64>,
    kind: Kind,
    process: u64,
    label: String,
}

fn shade(svg: &mut String, intervals: &[Interval], x: &dyn Fn(f64) -> f64, top: f64, h: f64, t_end: f64) {
    for iv in intervals {
        let (a, b) = (x(iv.start_s), x(iv.end_s.unwrap_or(t_end)));
        let _ = write!(
            svg,
            r#"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{h}" fill="{}" opacity="0.45"><title>{:?} {} {}</title></rect>"#,
            (b - a).max(1.0),
            nemesis_color(iv.kind),
            iv.kind,
            esc(&iv.mode),
            esc(&iv.detail)
        );
    }
}

fn axis_x(svg: &mut String, x: &dyn Fn(f64) -> f64, y: f64, t_end: f64) {
    let step = if t_end > 120.0 {
        20.0
    } else if t_end > 40.0 {
        10.0
    } else {
        5.0
    };
    let mut t = 0.0;
    while t <= t_end {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{y}" y2="{1}" stroke="#444"/><text x="{0:.1}" y="{2}" font-size="10" text-anchor="middle">{t}s</text>"##,
            x(t),
            y + 4.0,
            y + 15.0
        );
        t += step;
    }
}

pub fn write_html(path: &Path, summary: &Value, ops: &[Op], intervals: &[Interval]) -> Result<()> {
    let ps: Vec<P> = ops
        .iter()
        .map(|o| P {
            start: o.start as f64 / 1e9,
            end: o.end.map(|e| e as f64 / 1e9),
            kind: o.kind,
            process: o.process,
            label: format!(
                "p{} {} {} {} -> {} {}",
                o.process,
                o.f,
                o.key.clone().unwrap_or_default(),
                o.input,
                o.kind.as_str(),
                if o.kind == Kind::Ok { o.output.to_string() } else { o.error.clone().unwrap_or_default() }
            ),
        })
        .collect();
    let t_end = ps
        .iter()
        .map(|p| p.end.unwrap_or(p.start))
        .chain(intervals.iter().filter_map(|i| i.end_s))
        .fold(1.0f64, f64::max);
    let x = |t: f64| LEFT + t / t_end * (W - LEFT - 10.0);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>cairn-jepsen report</title><style>\
         body{{font-family:sans-serif;margin:20px}} td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}}\
         table{{border-collapse:collapse}} pre{{max-height:400px;overflow:auto;background:#f6f6f6;padding:6px;font-size:12px}}\
         .valid{{color:#2a9d3a}} .invalid{{color:#d62728}} .unknown{{color:#ff9f1c}}</style></head><body>"
    );
    let valid = summary["valid"].as_str().unwrap_or("unknown");
    let _ = write!(
        html,
        "<h1>cairn-jepsen: <span class=\"{valid}\">{valid}</span></h1><p>target <b>{}</b> ({}) · workload <b>{}</b> · nemesis <b>{}</b> · {} nodes · {} s · ops {}</p>",
        esc(summary["target"].as_str().unwrap_or("")),
        esc(summary["bin"].as_str().unwrap_or("")),
        esc(&summary["args"]["workload"].to_string()),
        esc(&summary["args"]["nemesis"].to_string()),
        summary["args"]["nodes"],
        summary["args"]["time"],
        esc(&summary["ops"].to_string())
    );
    html.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>verdict</th><th>details</th></tr>");
    for c in summary["checkers"].as_array().into_iter().flatten() {
        let v = c["valid"].as_str().unwrap_or("");
        let details = serde_json::to_string_pretty(&c["details"]).unwrap_or_default();
        let details = if details.len() > 60_000 { format!("{}…", &details[..60_000]) } else { details };
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"{v}\">{v}</td><td><pre>{}</pre></td></tr>",
            esc(c["checker"].as_str().unwrap_or("")),
            esc(&details)
        );
    }
    html.push_str("</table>");

    // Legend.
    html.push_str("<p>Shading: ");
    for k in NemesisKind::ALL {
        let _ = write!(html, "<span style=\"background:{};padding:0 6px\">{k:?}</span> ", nemesis_color(k));
    }
    html.push_str(" · ops: <span style=\"color:#2a9d3a\">ok</span> <span style=\"color:#d62728\">fail</span> <span style=\"color:#ff9f1c\">info</span></p>");

    // Latency (log scale, 1 ms .. 10 s); info ops are drawn at the top.
    let h = 300.0;
    let (top, bottom) = (10.0, 10.0 + h);
    let y = |lat_s: f64| {
        let l = (lat_s.max(0.0005) * 1000.0).log10().clamp(-0.3, 4.0); // 0.5 ms .. 10 s
        bottom - (l + 0.3) / 4.3 * h
    };
    let mut svg =
        format!(r#"<svg width="{W}" height="{}" xmlns="http://www.w3.org/2000/svg">"#, bottom + 25.0);
    shade(&mut svg, intervals, &x, top, h, t_end);
    for (ms, label) in [(1.0, "1ms"), (10.0, "10ms"), (100.0, "100ms"), (1000.0, "1s"), (10000.0, "10s")] {
        let yy = y(ms / 1000.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{W}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{label}</text>"##,
            LEFT - 4.0,
            yy + 3.0
        );
    }
    let stride = (ps.len() / 20_000).max(1);
    for p in ps.iter().step_by(stride) {
        let (lat, yy) = match p.end {
            Some(e) => (e - p.start, y(e - p.start)),
            None => (f64::NAN, top + 3.0),
        };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{yy:.1}" r="1.6" fill="{}"><title>{} ({:.1} ms)</title></circle>"#,
            x(p.start),
            color(p.kind),
            esc(&p.label),
            lat * 1000.0
        );
    }
    axis_x(&mut svg, &x, bottom, t_end);
    svg.push_str("</svg>");
    let _ = write!(html, "<h2>Latency</h2>{svg}");

    // Throughput: completions per second by type.
    let buckets = t_end.ceil() as usize + 1;
    let mut counts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in &ps {
        let t = p.end.unwrap_or(p.start);
        let name = p.kind.as_str();
        let v = counts.entry(name).or_insert_with(|| vec![0.0; buckets]);
        v[(t as usize).min(buckets - 1)] += 1.0;
    }
    let max = counts.values().flat_map(|v| v.iter().copied()).fold(1.0f64, f64::max);
    let h2 = 200.0;
    let mut svg =
        format!(r#"<svg width="{W}" height="{}" xmlns="http://www.w3.org/2000/svg">"#, 10.0 + h2 + 25.0);
    shade(&mut svg, intervals, &x, 10.0, h2, t_end);
    let yy = |c: f64| 10.0 + h2 - c / max * h2;
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" font-size="10" text-anchor="end">{max:.0}/s</text><text x="{}" y="{}" font-size="10" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        LEFT - 4.0,
        10.0 + h2
    );
    for (name, v) in &counts {
        let kind = match *name {
            "ok" => Kind::Ok,
            "fail" => Kind::Fail,
            _ => Kind::Info,
        };
        let pts: Vec<String> =
            v.iter().enumerate().map(|(i, c)| format!("{:.1},{:.1}", x(i as f64 + 0.5), yy(*c))).collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"><title>{name}</title></polyline>"#,
            pts.join(" "),
            color(kind)
        );
    }
    axis_x(&mut svg, &x, 10.0 + h2, t_end);
    svg.push_str("</svg>");
    let _ = write!(html, "<h2>Throughput (completions per second)</h2>{svg}");

    // Timeline: one row per process (at most 120 rows, the busiest).
    let mut by_process: BTreeMap<u64, Vec<&P>> = BTreeMap::new();
    for p in &ps {
        by_process.entry(p.process).or_default().push(p);
    }
    let mut rows: Vec<(u64, Vec<&P>)> = by_process.into_iter().collect();
    if rows.len() > 120 {
        rows.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        rows.truncate(120);
        rows.sort_by_key(|(p, _)| *p);
    }
    let row_h = 12.0;
    let th = rows.len() as f64 * row_h;
    let mut svg = format!(r#"<svg width="{W}" height="{}" xmlns="http://www.w3.org/2000/svg">"#, th + 40.0);
    shade(&mut svg, intervals, &x, 10.0, th, t_end);
    let budget = 30_000usize;
    let total: usize = rows.iter().map(|(_, v)| v.len()).sum();
    let stride = (total / budget).max(1);
    for (r, (process, list)) in rows.iter().enumerate() {
        let yr = 10.0 + r as f64 * row_h;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{:.1}" font-size="9" text-anchor="end">p{process}</text>"#,
            LEFT - 4.0,
            yr + 9.0
        );
        for p in list.iter().step_by(stride) {
            let a = x(p.start);
            let b = x(p.end.unwrap_or(t_end));
            let _ = write!(
                svg,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{}"><title>{}</title></rect>"#,
                yr + 1.0,
                (b - a).max(0.8),
                row_h - 2.0,
                color(p.kind),
                esc(&p.label)
            );
        }
    }
    axis_x(&mut svg, &x, 10.0 + th, t_end);
    svg.push_str("</svg>");
    let _ = write!(html, "<h2>Timeline (one row per process; an info op extends to the end)</h2>{svg}");

    html.push_str("<h2>Nemesis</h2><table><tr><th>kind</th><th>mode</th><th>nodes</th><th>start</th><th>end</th><th>detail</th></tr>");
    for iv in intervals {
        let _ = write!(
            html,
            "<tr><td>{:?}</td><td>{}</td><td>{:?}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            iv.kind,
            esc(&iv.mode),
            iv.nodes.iter().map(|i| format!("n{}", i + 1)).collect::<Vec<_>>(),
            iv.start_s,
            iv.end_s.map(|e| format!("{e:.1}")).unwrap_or_default(),
            esc(&iv.detail)
        );
    }
    html.push_str("</table><p>Files: <a href=\"results.json\">results.json</a> · <a href=\"history.jsonl\">history.jsonl</a> · <a href=\"nemesis.json\">nemesis.json</a> · <a href=\"logs/\">logs/</a></p></body></html>");
    std::fs::write(path, html)?;
    Ok(())
}
