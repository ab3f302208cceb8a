/** The feature matrix on the tiny qwen3 model (test/models/matrix.ts). */
import { describeMatrix } from "./matrix.js";

describeMatrix("qwen3");
