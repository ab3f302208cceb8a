/** The feature matrix on the tiny phi3 model (test/models/matrix.ts). */
import { describeMatrix } from "./matrix.js";

describeMatrix("phi3");
