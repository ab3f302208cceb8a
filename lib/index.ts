/**
 * llamem: run GGUF models locally through llama.cpp, with memory you can see and bound.
 */
export { loadModel, Model } from "./model.js";
export type { LoadModelOptions, LoadMode, ModelInfo, ChatMessage, TokenizeOptions } from "./model.js";
export { Context, defaultThreads } from "./context.js";
export type { ContextOptions, GenerateOptions, GenerationResult, StopReason, KvCacheType, MemoryRow } from "./context.js";
export type { SamplingOptions } from "./sampler.js";
export { LlamemError } from "./errors.js";
export type { LlamemErrorCode } from "./errors.js";
export { setLogLevel } from "./native.js";
export type { LogLevel } from "./native.js";
export { readGguf } from "./gguf.js";
export type { GgufFile, GgufTensorInfo } from "./gguf.js";
