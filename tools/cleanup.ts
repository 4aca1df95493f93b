// Removes every service, container, network, volume and image the live tests and the bench labelled,
// whatever state they are in.
import Docker from "dockerode";
import { LABEL } from "../infra/naming";
import { removeByLabel } from "./engine-objects";

removeByLabel(new Docker(), LABEL.e2e)
  .then((n) => n > 0 && console.log(`[cleanup] removed ${n} labelled object(s)`))
  .catch((e: Error) => {
    console.error(`[cleanup] ${e.message}`);
    process.exitCode = 1;
  });
