// CrossGuard guardrails for this project: `pulumi preview --stack prod --policy-pack policy`.
// Config: `strictStacks` (default DEFAULT_STRICT_STACKS in rules.ts) names the stacks held to the production rules.
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

new PolicyPack("flask-proxy-guardrails", { enforcementLevel: "mandatory", policies });
