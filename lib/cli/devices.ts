/**
 * `llamem devices`: the compute devices llama.cpp can use in this build (the CPU, GPUs, RPC
 * servers once added), with their free and total memory.
 */
import type { Command } from "commander";
import { cpuBackend, listDevices, type Device } from "../devices.js";
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
        "with their free and total memory (for the CPU: host RAM as the backend reports it), and the CPU " +
        "backend in use: a source build's (native), or the CPU variant a prebuild chose for this CPU.",
    )
    .option("--json", "print a JSON array of { name, description, type, backend, free, total } (bytes); the CPU's entry also has cpuVariant and cpuFeatures")
    .addHelpText(
      "after",
      `
Examples:
  $ llamem devices
  $ llamem devices --json | jq '.[] | select(.type == "gpu") | .free'`,
    )
    .action((o: DevicesOptions) => {
      const devices: Device[] = listDevices();
      const cpu = cpuBackend();
      if (o.json) {
        const rows = devices.map((d) => (d.type === "cpu" && d.backend === "CPU" ? { ...d, cpuVariant: cpu.variant, cpuFeatures: cpu.features } : d));
        process.stdout.write(JSON.stringify(rows) + "\n");
        return;
      }
      const style = styleFor(process.stdout);
      const rows = [["name", "type", "backend", "free", "total", "description"].map((h) => style.bold(h))];
      for (const d of devices) rows.push([d.name, d.type, d.backend, formatBytes(d.free), formatBytes(d.total), d.description]);
      process.stdout.write(formatTable(rows) + "\n");
      process.stdout.write(`${style.bold("CPU backend:")} ${describeCpuBackend(cpu.variant)}\n`);
      if (cpu.features.length > 0) process.stdout.write(`${style.bold("CPU features:")} ${cpu.features.join(", ")}\n`);
    });
}

function describeCpuBackend(variant: string): string {
  if (variant === "native") return "native (built from source for this machine)";
  if (variant === "portable") return "portable (a prebuild for a baseline CPU)";
  return `${variant} (a prebuild's CPU variant, the best of those it carries for this CPU)`;
}
