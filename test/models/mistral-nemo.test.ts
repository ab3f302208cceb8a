/** The feature matrix on the tiny mistral-nemo model (test/models/matrix.ts). */
import { describeMatrix } from "./matrix.js";

describeMatrix("mistral-nemo");
