/** The feature matrix on the tiny qwen2 model (test/models/matrix.ts). */
import { describeMatrix } from "./matrix.js";

describeMatrix("qwen2");
