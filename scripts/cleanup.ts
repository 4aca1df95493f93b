// Removes every container, network, volume and image the live tests labelled, whatever state they are in.
import Docker from "dockerode";
import { E2E_LABEL, removeByLabel } from "../tests/support/realize";

removeByLabel(new Docker(), E2E_LABEL)
  .then((n) => n > 0 && console.log(`[cleanup] removed ${n} labelled object(s)`))
  .catch((e: Error) => {
    console.error(`[cleanup] ${e.message}`);
    process.exitCode = 1;
  });
