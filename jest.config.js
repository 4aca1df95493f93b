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
  projects: [
    project("unit", ["<rootDir>/tests/unit/**/*.test.ts"]),
    project("e2e", ["<rootDir>/tests/e2e/**/*.test.ts"], { testTimeout: 300000 }),
  ],
};
