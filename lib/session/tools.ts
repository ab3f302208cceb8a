/**
 * Tools a session offers the model: their definitions as the template describes them, the check
 * of the arguments the model writes (valid JSON, valid under the tool's schema, with ajv), and
 * running the handler. A bad call becomes an error message for the model, not an exception
 * for the app.
 */
import { Ajv, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import { invalidArgument } from "../errors.js";
import type { ChatTool } from "../chat/template.js";
import { checkTools, type ParsedToolCall } from "../chat/tool-calls.js";
import type { JsonSchema } from "../grammar/json-schema.js";

/** A tool a session's model may call. */
export interface SessionTool {
  /** What the tool does, for the model. */
  readonly description?: string;
  /** The JSON Schema of its arguments (an object schema). */
  readonly parameters: JsonSchema;
  /**
   * Runs the call with the parsed, validated arguments. Its result goes back to the model as the
   * tool message (a string as is, anything else as JSON). If it throws, the error's message goes
   * back instead, and the model may answer or call again.
   */
  readonly handler: (args: Record<string, unknown>, context: { readonly signal: AbortSignal }) => unknown;
}

/** A tool call the session ran, and what came of it. */
export interface ToolCallRecord {
  readonly name: string;
  /** The arguments as parsed, or the raw text when they did not parse. */
  readonly arguments: unknown;
  readonly id: string | undefined;
  /** The text sent back to the model as the tool message. */
  readonly result: string;
  /** True when the arguments were refused or the handler threw (the result says why). */
  readonly error: boolean;
}

/** A session's tools, checked, with their argument validators. @internal */
export class Toolbox {
  readonly definitions: readonly ChatTool[];
  readonly #tools: ReadonlyMap<string, { tool: SessionTool; validate: ValidateFunction }>;

  constructor(tools: Readonly<Record<string, SessionTool>>) {
    if (tools === null || typeof tools !== "object" || Array.isArray(tools)) invalidArgument("tools must be an object { name: { description, parameters, handler } }");
    const ajv = new Ajv({ allErrors: true, strict: false });
    // "format" (date, email, uuid...) is checked, not ignored.
    addFormats.default(ajv);
    const map = new Map<string, { tool: SessionTool; validate: ValidateFunction }>();
    const definitions: ChatTool[] = [];
    for (const [name, tool] of Object.entries(tools)) {
      if (tool === null || typeof tool !== "object") invalidArgument(`tools.${name} must be an object { description, parameters, handler }`);
      if (typeof tool.handler !== "function") invalidArgument(`tools.${name}.handler must be a function`);
      if (tool.description !== undefined && typeof tool.description !== "string") invalidArgument(`tools.${name}.description must be a string`);
      let validate!: ValidateFunction;
      try {
        validate = ajv.compile(tool.parameters as object);
      } catch (err) {
        invalidArgument(`tools.${name}.parameters is not a valid JSON Schema: ${(err as Error).message}`);
      }
      map.set(name, { tool, validate });
      definitions.push(tool.description === undefined ? { name, parameters: tool.parameters } : { name, description: tool.description, parameters: tool.parameters });
    }
    checkTools(definitions);
    this.definitions = definitions;
    this.#tools = map;
  }

  has(name: string): boolean {
    return this.#tools.has(name);
  }

  /** Checks a call's arguments and runs its handler; never throws (but rethrows an abort of the turn). */
  async run(call: ParsedToolCall, signal: AbortSignal): Promise<ToolCallRecord> {
    const id = call.id;
    const entry = this.#tools.get(call.name);
    const refuse = (args: unknown, why: string): ToolCallRecord => ({ name: call.name, arguments: args, id, result: `Error: ${why}`, error: true });
    if (!entry) return refuse(call.arguments, `there is no tool named "${call.name}"; the tools are ${[...this.#tools.keys()].join(", ")}`);
    let args: unknown;
    try {
      args = JSON.parse(call.arguments.trim() === "" ? "{}" : call.arguments);
    } catch (err) {
      return refuse(call.arguments, `the arguments are not valid JSON (${(err as Error).message})`);
    }
    if (!entry.validate(args)) {
      const why = (entry.validate.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message ?? "is invalid"}`).join("; ");
      return refuse(args, `the arguments do not match the tool's parameters: ${why}`);
    }
    try {
      const value = await entry.tool.handler(args as Record<string, unknown>, { signal });
      const result = typeof value === "string" ? value : (JSON.stringify(value) ?? "null");
      return { name: call.name, arguments: args, id, result, error: false };
    } catch (err) {
      if (signal.aborted) throw err;
      return refuse(args, `the tool failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}
