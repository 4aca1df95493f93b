/** @type {import('jest').Config} */
const project = (name, match, extra = {}) => ({
  displayName: name,
  preset: "ts-jest",
  testEnvironment: "node",
  rootDir: __dirname,
  testMatch: match,
  ...extra,
});
module.exports = {
  projects: [project("unit", ["<rootDir>/tests/unit/**/*.test.ts"]), project("e2e", ["<rootDir>/tests/e2e/**/*.test.ts"])],
  // Live tests build images and wait for containers; unit tests finish in milliseconds either way.
  testTimeout: 300000,
  // List every test, so a skipped one shows with its reason.
  verbose: true,
};
