/** The feature matrix on the tiny llama model (test/models/matrix.ts). */
import { describeMatrix } from "./matrix.js";

describeMatrix("llama");
