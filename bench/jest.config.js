/** @type {import('jest').Config} — the benchmark runs under jest only because the program harness does. */
module.exports = {
  preset: "ts-jest",
  testEnvironment: "node",
  rootDir: "..",
  testMatch: ["<rootDir>/bench/**/*.test.ts"],
  testTimeout: 1800000,
  verbose: true,
};
