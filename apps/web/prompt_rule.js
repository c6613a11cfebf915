// The prompt rule, the same in every runtime (sam_edge/predictor.py prompt_rule_error, the iOS
// and Android samples' SamPredictor): the decoder takes at most maxPoints point rows; a box fills
// 2 of them, a prompt without a box 1 padding row; a box needs a width and a height. The messages
// are word for word those of the Python runtime (tests/hostile/test_prompts_and_data.py runs both).

export const MAX_POINTS = 64;  // ONNX / ExecuTorch / Core ML decoders: 1..64 point rows

// null when the prompt is usable, else the message. box: [x0, y0, x1, y1] or null.
export function promptRuleError(numPoints, box, maxPoints = MAX_POINTS) {
  if (box) {
    const [x0, y0, x1, y1] = box.map(Number);
    if (x1 === x0 || y1 === y0) {
      return `box [${[x0, y0, x1, y1].map(String).join(", ")}] has zero width or height (x0 == x1 or y0 == y1)`;
    }
  }
  const limit = maxPoints - (box ? 2 : 1);
  if (numPoints > limit) {
    return `point_coords: ${numPoints} points, at most ${limit} ${box ? "with" : "without"} a box ` +
      `(max_points=${maxPoints} decoder point rows: a box fills 2, no box 1 padding row)`;
  }
  return null;
}
