// Destroys, with the real CLI, every live stack an interrupted test or bench run left behind (its temporary
// state folder still exists), so nothing it created stays on the engine.
import { LiveStack } from "./live-stack";

async function destroyLeftBehind(): Promise<void> {
  const stacks = await LiveStack.leftBehind();
  for (const s of stacks) {
    console.log(`[cleanup] pulumi destroy of a stack an interrupted run left: ${s.name}`);
    await s.destroy();
  }
}

destroyLeftBehind().catch((e: Error) => {
  console.error(`[cleanup] ${e.message}`);
  process.exitCode = 1;
});
