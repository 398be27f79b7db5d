//! The demo's picture: for each direction of traffic, the packets received per bin over
//! time, coloured by the path that carried them (`paths`), with markers for what
//! happened (cut, detection, switch, heal, return). One panel per gateway kind, every
//! panel on the same time axis: seconds since the cut.
//!
//! A `Timeline` is plain data (serde), built from probe traces and written beside the
//! picture, so a run can be drawn again or compared later.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::traffic::Trace;

/// Arrivals whose TTL names no path (the marks were not installed, or another path).
pub const UNMARKED: &str = "unmarked";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub bin_ms: u32,
    pub panels: Vec<Panel>,
}

/// What one kind of gateway did (crosslink, or the BIRD baseline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// One direction of traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// e.g. "ha -> hb".
    pub title: String,
    /// Where bin 0 starts, in ms since the panel's origin.
    pub start_ms: f64,
    /// Packets received per bin, by path.
    pub counts: BTreeMap<String, Vec<u32>>,
    pub markers: Vec<Marker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkerKind {
    /// The fault was injected.
    Cut,
    /// The gateway that forwards this direction reported the failure.
    Detection,
    /// The first packet arrived over the new path.
    Switch,
    /// The fault was removed.
    Heal,
    /// The first packet arrived over the healed line again.
    Return,
}

impl MarkerKind {
    pub fn name(self) -> &'static str {
        match self {
            MarkerKind::Cut => "cut",
            MarkerKind::Detection => "detection",
            MarkerKind::Switch => "switch",
            MarkerKind::Heal => "heal",
            MarkerKind::Return => "return",
        }
    }

    fn colour(self) -> RGBColor {
        match self {
            MarkerKind::Cut => RGBColor(0xd6, 0x27, 0x28),
            MarkerKind::Detection => RGBColor(0x8c, 0x56, 0x4b),
            MarkerKind::Switch => RGBColor(0x33, 0x33, 0x33),
            MarkerKind::Heal => RGBColor(0x17, 0xbe, 0xcf),
            MarkerKind::Return => RGBColor(0xbc, 0xbd, 0x22),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// ms since the panel's origin.
    pub at_ms: f64,
    pub kind: MarkerKind,
    /// Shown beside the marker, e.g. "cut line1" or "detection +29 ms".
    pub label: String,
}

impl Series {
    /// The arrivals of `trace` between `from_ms` and `to_ms` after `origin`, binned, each
    /// by the path its TTL names.
    pub fn from_trace(
        title: &str,
        trace: &Trace,
        origin: Instant,
        (from_ms, to_ms): (f64, f64),
        bin_ms: u32,
    ) -> Series {
        let bin = f64::from(bin_ms.max(1));
        let bins = ((to_ms - from_ms) / bin).ceil().max(0.0) as usize;
        let mut counts: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for a in &trace.arrivals {
            let ms = signed_ms(a.at, origin) - from_ms;
            if ms < 0.0 {
                continue;
            }
            let i = (ms / bin) as usize;
            if i >= bins {
                continue;
            }
            let path = paths::of_ttl(a.ttl).unwrap_or(UNMARKED);
            counts
                .entry(path.to_owned())
                .or_insert_with(|| vec![0; bins])[i] += 1;
        }
        Series {
            title: title.to_owned(),
            start_ms: from_ms,
            counts,
            markers: Vec::new(),
        }
    }

    fn end_ms(&self, bin_ms: u32) -> f64 {
        let bins = self.counts.values().map(Vec::len).max().unwrap_or(0);
        self.start_ms + bins as f64 * f64::from(bin_ms)
    }

    /// Paths in the order of `paths::NAMES`, anything else after.
    fn ordered_paths(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.counts.keys().map(String::as_str).collect();
        names.sort_by_key(|n| {
            paths::NAMES
                .iter()
                .position(|p| p == n)
                .unwrap_or(usize::MAX)
        });
        names
    }
}

/// `t - origin` in ms, negative when `t` came first.
pub fn signed_ms(t: Instant, origin: Instant) -> f64 {
    match t.checked_duration_since(origin) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(origin.duration_since(t).as_secs_f64() * 1000.0),
    }
}

fn path_colour(path: &str) -> RGBColor {
    match path {
        "line1" => RGBColor(0x1f, 0x77, 0xb4),
        "line2" => RGBColor(0xff, 0x7f, 0x0e),
        "inet1" => RGBColor(0x2c, 0xa0, 0x2c),
        "inet2" => RGBColor(0x94, 0x67, 0xbd),
        _ => RGBColor(0x99, 0x99, 0x99),
    }
}

const WIDTH: u32 = 1400;
const SERIES_HEIGHT: u32 = 260;

impl Timeline {
    /// The picture as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        let series: Vec<(&Panel, &Series)> = self
            .panels
            .iter()
            .flat_map(|p| p.series.iter().map(move |s| (p, s)))
            .collect();
        if series.is_empty() {
            return Err(anyhow!("a timeline without traffic has nothing to draw"));
        }
        let x0 = series
            .iter()
            .map(|(_, s)| s.start_ms)
            .fold(f64::INFINITY, f64::min)
            / 1000.0;
        let x1 = series
            .iter()
            .map(|(_, s)| s.end_ms(self.bin_ms))
            .fold(f64::NEG_INFINITY, f64::max)
            / 1000.0;
        let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
        let top = series
            .iter()
            .flat_map(|(_, s)| s.counts.values().flatten())
            .max()
            .copied()
            .unwrap_or(1)
            .max(1);
        // Room above the traffic for the markers' labels.
        let y_max = f64::from(top) * 1.9;
        let mut svg = String::new();
        {
            let height = SERIES_HEIGHT * series.len() as u32;
            let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let areas = root.split_evenly((series.len(), 1));
            for ((panel, s), area) in series.iter().zip(areas) {
                self.draw_series(&area, panel, s, (x0, x1), y_max)?;
            }
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }

    fn draw_series<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        panel: &Panel,
        s: &Series,
        (x0, x1): (f64, f64),
        y_max: f64,
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{}: {}", panel.title, s.title), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0f64..y_max)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("seconds since the cut")
            .y_desc(format!("packets / {} ms", self.bin_ms))
            .draw()
            .map_err(plot_err)?;
        // Stacked: each path's area is drawn from zero up to the sum of the paths before
        // it and its own, the largest sum first, so each path shows as its own band.
        let names = s.ordered_paths();
        let bins = s.counts.values().map(Vec::len).max().unwrap_or(0);
        let mut sums: Vec<Vec<f64>> = Vec::with_capacity(names.len());
        let mut running = vec![0f64; bins];
        for n in &names {
            for (acc, c) in running.iter_mut().zip(&s.counts[*n]) {
                *acc += f64::from(*c);
            }
            sums.push(running.clone());
        }
        let bin_s = f64::from(self.bin_ms) / 1000.0;
        for (n, sum) in names.iter().zip(&sums).rev() {
            let colour = path_colour(n);
            let points = sum
                .iter()
                .enumerate()
                .map(|(i, v)| (s.start_ms / 1000.0 + i as f64 * bin_s, *v));
            chart
                .draw_series(AreaSeries::new(points, 0.0, colour.filled()).border_style(colour))
                .map_err(plot_err)?
                .label(*n)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        for (i, m) in s.markers.iter().enumerate() {
            let x = m.at_ms / 1000.0;
            let colour = m.kind.colour();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, y_max)],
                    colour.stroke_width(1),
                )))
                .map_err(plot_err)?;
            // Markers a few ms apart share an x position: stagger their labels.
            let y = y_max * (0.95 - 0.09 * (i % 5) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    m.label.clone(),
                    (x, y),
                    ("sans-serif", 13).into_font().color(&colour),
                )))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

fn plot_err<E: std::error::Error + Send + Sync>(
    e: plotters::drawing::DrawingAreaErrorKind<E>,
) -> anyhow::Error {
    anyhow!("drawing the timeline: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeline recorded by the demo (`crosslink-lab demo`, timeline.json beside the
    /// picture): crosslink and the BIRD baseline, a silent drop of line 1 and its return.
    const RECORDED: &str = include_str!("../tests/data/demo-timeline.json");

    fn recorded() -> Timeline {
        serde_json::from_str(RECORDED).expect("the recorded timeline parses")
    }

    #[test]
    fn the_recorded_timeline_renders_as_svg_with_every_marker_and_path() {
        let t = recorded();
        let svg = t.to_svg().unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(str::to_owned))
            .collect();
        let has = |word: &str| texts.iter().any(|t| t.contains(word));
        for kind in ["cut", "detection", "switch", "heal", "return"] {
            assert!(has(kind), "no {kind} marker in {texts:?}");
        }
        for path in ["line1", "line2", "inet1", "inet2"] {
            assert!(has(path), "no {path} label in {texts:?}");
        }
        for panel in &t.panels {
            assert!(has(&panel.title), "no panel {} in {texts:?}", panel.title);
        }
    }

    #[test]
    fn arrivals_are_binned_by_path_from_the_origin() {
        use crate::traffic::Arrival;
        use std::time::Duration;
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let line1 = paths::ttl_of("line1").unwrap();
        let line2 = paths::ttl_of("line2").unwrap();
        let trace = Trace {
            started: t0,
            period: Duration::from_millis(1),
            sent: 40,
            last_send: ms(39),
            // 0..=9 over line 1, a 10 ms silence, 20..=39 over line 2, one unmarked.
            arrivals: (0..40)
                .filter(|s| !(10..20).contains(s))
                .map(|s| Arrival {
                    seq: s,
                    at: ms(s),
                    ttl: if s == 39 {
                        61
                    } else if s < 10 {
                        line1
                    } else {
                        line2
                    },
                })
                .collect(),
        };
        // Origin (the cut) at 10 ms; bins of 10 ms from -10 ms.
        let s = Series::from_trace("ha -> hb", &trace, ms(10), (-10.0, 30.0), 10);
        assert_eq!(s.counts["line1"], [10, 0, 0, 0]);
        assert_eq!(s.counts["line2"], [0, 0, 10, 9]);
        assert_eq!(s.counts[UNMARKED], [0, 0, 0, 1]);
        assert_eq!(s.ordered_paths(), ["line1", "line2", UNMARKED]);
        assert!((s.end_ms(10) - 30.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_timeline_is_refused() {
        let t = Timeline {
            bin_ms: 10,
            panels: Vec::new(),
        };
        assert!(t.to_svg().is_err());
    }
}
