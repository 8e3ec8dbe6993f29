//! SVG charts for the HTML report, drawn with plotters' SVG backend. Floating point is used
//! here for drawing coordinates only: values arrive as exact sums, are shown as exact text
//! (rounded to 2 places) and never flow back into any amount.
#![allow(clippy::float_arithmetic)]

use costledger_core::ExactSum;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Chart;

const W: u32 = 960;
const H: u32 = 380;
const LEGEND_W: u32 = 260;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn f(v: &ExactSum) -> f64 {
    v.to_fixed(2).parse().unwrap_or(0.0)
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

pub fn render_svg(c: &Chart) -> Result<String, String> {
    let mut buf = String::new();
    {
        let h = if c.bars { bar_height(c) } else { H };
        let root = SVGBackend::with_string(&mut buf, (W, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        if c.bars {
            bars(&root, c)?;
        } else {
            lines(&root, c)?;
        }
        root.present().map_err(err)?;
    }
    Ok(buf)
}

fn lines(root: &DrawingArea<SVGBackend, plotters::coord::Shift>, c: &Chart) -> Result<(), String> {
    let (plot, legend) = root.split_horizontally(W - LEGEND_W);
    let all: Vec<f64> = c.series.iter().flat_map(|s| s.values.iter().map(f)).collect();
    let max = all.iter().copied().fold(0.0_f64, f64::max);
    let min = all.iter().copied().fold(0.0_f64, f64::min);
    let top = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let bottom = if min < 0.0 { min * 1.1 } else { 0.0 };
    let n = c.labels.len().max(2);
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..(n - 1) as f64, bottom..top)
        .map_err(err)?;
    let labels = c.labels.clone();
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| labels.get(x.round().max(0.0) as usize).cloned().unwrap_or_default())
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc(c.currency.clone())
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    for (i, s) in c.series.iter().enumerate() {
        let col = color(i);
        chart
            .draw_series(LineSeries::new(
                s.values.iter().enumerate().map(|(x, v)| (x as f64, f(v))),
                col.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(s.values.iter().enumerate().map(|(x, v)| Circle::new((x as f64, f(v)), 3, col.filled())))
            .map_err(err)?;
    }
    // Legend: owner and this week's (last point's) amount.
    let style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
    let last = c.labels.last().cloned().unwrap_or_default();
    legend.draw(&Text::new(format!("{} in {last}", c.currency), (10, 16), style.clone())).map_err(err)?;
    for (i, s) in c.series.iter().enumerate() {
        let y = 40 + 22 * i as i32;
        legend.draw(&Rectangle::new([(10, y - 6), (24, y + 6)], color(i).filled())).map_err(err)?;
        let last = s.values.last().map(|v| v.to_fixed(2)).unwrap_or_default();
        legend.draw(&Text::new(format!("{}: {last}", s.name), (32, y - 7), style.clone())).map_err(err)?;
    }
    Ok(())
}

const ROW_H: u32 = 40;

fn bar_height(c: &Chart) -> u32 {
    let n = c.series.first().map(|s| s.values.len()).unwrap_or(0).max(1);
    20 + ROW_H * u32::try_from(n).unwrap_or(1)
}

fn bars(root: &DrawingArea<SVGBackend, plotters::coord::Shift>, c: &Chart) -> Result<(), String> {
    let values: Vec<f64> = c.series.first().map(|s| s.values.iter().map(f).collect()).unwrap_or_default();
    let max = values.iter().map(|v| v.abs()).fold(0.0_f64, f64::max);
    let label_w = 190;
    let value_w = 140;
    let bar_max = (W as i32 - label_w - value_w - 20) as f64;
    let row_h = ROW_H as i32;
    let style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
    for (i, v) in values.iter().enumerate() {
        let y = 10 + row_h * i as i32;
        let w = if max > 0.0 { (v.abs() / max * bar_max).round() as i32 } else { 0 };
        let col = if *v < 0.0 { color(2) } else { color(3) };
        let label = c.labels.get(i).cloned().unwrap_or_default();
        root.draw(&Text::new(label, (label_w - 8, y + row_h / 2), style.pos(Pos::new(HPos::Right, VPos::Center))))
            .map_err(err)?;
        root.draw(&Rectangle::new([(label_w, y + 4), (label_w + w.max(1), y + row_h - 4)], col.filled()))
            .map_err(err)?;
        let shown = c.series[0].values[i].to_fixed(2);
        root.draw(&Text::new(
            format!("{shown} {}", c.currency),
            (label_w + w.max(1) + 8, y + row_h / 2),
            style.pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;
    }
    Ok(())
}
