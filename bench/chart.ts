// The bar charts of docs/benchmark.md (requests per second by scenario; seconds per control-plane command), as small
// standalone SVGs.

export interface Bar {
  label: string;
  value: number;
  /** Shown after the bar, e.g. "1234 req/s". */
  text: string;
  /** Drawn in the darker colour. */
  highlight?: boolean;
  /** Optional range drawn as a whisker over the bar (same unit as value). */
  range?: [number, number];
}

export function svgChart(bars: Bar[], title: string, left = 150): string {
  const w = left + 490;
  const barH = 28;
  const gap = 12;
  const top = 40;
  const max = Math.max(...bars.map((b) => b.range?.[1] ?? b.value));
  const scale = (v: number) => ((w - left - 130) * v) / max;
  const h = top + bars.length * (barH + gap) + 20;
  const drawn = bars
    .map((b, i) => {
      const y = top + i * (barH + gap);
      const len = Math.max(1, scale(b.value));
      const whisker = b.range
        ? `<line x1="${(left + scale(b.range[0])).toFixed(1)}" x2="${(left + scale(b.range[1])).toFixed(1)}" y1="${y + barH / 2}" y2="${y + barH / 2}" stroke="#333"/>`
        : "";
      const end = left + Math.max(len, b.range ? scale(b.range[1]) : 0);
      return (
        `<text x="${left - 8}" y="${y + barH * 0.68}" text-anchor="end">${b.label}</text>` +
        `<rect x="${left}" y="${y}" width="${len.toFixed(1)}" height="${barH}" fill="${b.highlight ? "#2b7bb9" : "#9bbbd4"}"/>` +
        whisker +
        `<text x="${(end + 6).toFixed(1)}" y="${y + barH * 0.68}">${b.text}</text>`
      );
    })
    .join("\n  ");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="13">
  <text x="${left}" y="22" font-weight="bold">${title}</text>
  ${drawn}
</svg>
`;
}
