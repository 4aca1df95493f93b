// The README's bar chart of requests per second by scenario, as a small standalone SVG.
import type { Measured } from "./stats";

export function svgChart(scenarios: Measured[], title: string, highlight: string): string {
  const w = 640;
  const barH = 28;
  const gap = 12;
  const left = 150;
  const top = 40;
  const max = Math.max(...scenarios.map((s) => s.rps));
  const h = top + scenarios.length * (barH + gap) + 20;
  const bars = scenarios
    .map((s, i) => {
      const y = top + i * (barH + gap);
      const len = Math.max(1, ((w - left - 130) * s.rps) / max);
      return (
        `<text x="${left - 8}" y="${y + barH * 0.68}" text-anchor="end">${s.name}</text>` +
        `<rect x="${left}" y="${y}" width="${len.toFixed(1)}" height="${barH}" fill="${s.name === highlight ? "#2b7bb9" : "#9bbbd4"}"/>` +
        `<text x="${(left + len + 6).toFixed(1)}" y="${y + barH * 0.68}">${Math.round(s.rps)} req/s</text>`
      );
    })
    .join("\n  ");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="13">
  <text x="${left}" y="22" font-weight="bold">${title}</text>
  ${bars}
</svg>
`;
}
