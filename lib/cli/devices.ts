/**
 * `llamem devices`: the compute devices llama.cpp can use in this build (the CPU, GPUs, RPC
 * servers once added), with their free and total memory.
 */
import type { Command } from "commander";
import { listDevices, type Device } from "../devices.js";
import { formatBytes, formatTable, styleFor } from "./output.js";

interface DevicesOptions {
  json?: boolean;
}

/** Registers `llamem devices`. */
export function registerDevices(program: Command): Command {
  return program
    .command("devices")
    .summary("list the compute devices and their memory")
    .description(
      "List the devices llama.cpp can run models on in this build (the CPU always, GPUs with a GPU build) " +
        "with their free and total memory (for the CPU: host RAM as the backend reports it).",
    )
    .option("--json", "print a JSON array of { name, description, type, backend, free, total } (bytes)")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem devices
  $ llamem devices --json | jq '.[] | select(.type == "gpu") | .free'`,
    )
    .action((o: DevicesOptions) => {
      const devices: Device[] = listDevices();
      if (o.json) {
        process.stdout.write(JSON.stringify(devices) + "\n");
        return;
      }
      const style = styleFor(process.stdout);
      const rows = [["name", "type", "backend", "free", "total", "description"].map((h) => style.bold(h))];
      for (const d of devices) rows.push([d.name, d.type, d.backend, formatBytes(d.free), formatBytes(d.total), d.description]);
      process.stdout.write(formatTable(rows) + "\n");
    });
}
