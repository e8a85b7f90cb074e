import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
}

const COLORS = ["#4f46e5", "#059669", "#d97706"];

/** The y-axis as wide as its longest label (uPlot's "axis autosize" demo): 0.0333 or 1250 are not cut. */
function labelsWidth(self: uPlot, values: string[] | null, axisIdx: number, cycleNum: number): number {
  const axis = self.axes[axisIdx];
  if (!axis) return 40;
  if (cycleNum > 1) return (axis as { _size?: number })._size ?? 40; // settled: uPlot re-asks until stable
  const longest = (values ?? []).reduce((acc, value) => (value.length > acc.length ? value : acc), "");
  let size = (axis.ticks?.size ?? 10) + (axis.gap ?? 5);
  if (longest) {
    self.ctx.font = axis.font?.[0] ?? self.ctx.font;
    size += self.ctx.measureText(longest).width / devicePixelRatio;
  }
  return Math.ceil(size);
}

/** Small multiples: one uPlot line per series (uPlot: ~20 kB gzipped, loaded with the dashboard only). */
export function Chart({ series }: { series: Series[] }) {
  return (
    <div className="grid gap-2 md:grid-cols-3">
      {series.map((s, i) => (
        <Line key={s.label} series={s} color={COLORS[i % COLORS.length] ?? "#4f46e5"} />
      ))}
    </div>
  );
}

function Line({ series, color }: { series: Series; color: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    const element = box.current;
    if (!element) return;
    const made = new uPlot(
      {
        width: element.clientWidth,
        height: 120,
        legend: { show: false },
        scales: { x: { time: false } },
        axes: [{ show: false }, { size: labelsWidth, stroke: "#71717a" }],
        series: [{}, { label: series.label, stroke: color, width: 2 }],
      },
      [[], []],
      element,
    );
    plot.current = made;
    const resize = new ResizeObserver(() => made.setSize({ width: element.clientWidth, height: 120 }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      made.destroy();
      plot.current = null;
    };
  }, [series.label, color]);
  useEffect(() => {
    plot.current?.setData([series.values.map((_, i) => i), series.values]);
  }, [series.values]);
  return (
    <figure className="min-w-0 rounded-lg border border-zinc-200 p-2 dark:border-zinc-800">
      <figcaption className="text-xs text-zinc-600 dark:text-zinc-400">{series.label}</figcaption>
      <div ref={box} className="w-full overflow-hidden" />
    </figure>
  );
}
