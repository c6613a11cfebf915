// Pure pre/post-processing maths shared by SamPredictor and Benchmark, mirroring
// sam_edge/transforms.py (ResizeLongestSide) and sam_edge/runtime/predictor.py
// (postprocess_masks: bilinear to SxS, crop to the resized image, bilinear to the original size,
// both with PyTorch's align_corners=False sampling, no antialiasing).

import Foundation

enum MaskMath {
    /// (h, w) after scaling so that the longer side equals `longSide` (rounded half up),
    /// as `get_preprocess_shape` in sam_edge/transforms.py.
    static func preprocessShape(height: Int, width: Int, longSide: Int) -> (height: Int, width: Int) {
        let scale = Double(longSide) / Double(max(height, width))
        return (Int(Double(height) * scale + 0.5), Int(Double(width) * scale + 0.5))
    }

    /// Original-image pixel -> model input frame (ResizeLongestSide.apply_coords).
    static func toModelFrame(x: Double, y: Double, originalHeight: Int, originalWidth: Int,
                             longSide: Int) -> (x: Float, y: Float) {
        let (h, w) = preprocessShape(height: originalHeight, width: originalWidth, longSide: longSide)
        return (Float(x * Double(w) / Double(originalWidth)), Float(y * Double(h) / Double(originalHeight)))
    }

    /// Source index pairs and weights of a 1-D bilinear resize `inSize -> outSize`
    /// (PyTorch align_corners=False: src = max((dst + 0.5) * in / out - 0.5, 0)), evaluated at
    /// output positions 0..<count (count <= outSize allows a crop of the output).
    static func axisTable(inSize: Int, outSize: Int, count: Int) -> (i0: [Int], i1: [Int], w1: [Float]) {
        let scale = Double(inSize) / Double(outSize)
        var i0 = [Int](repeating: 0, count: count)
        var i1 = [Int](repeating: 0, count: count)
        var w1 = [Float](repeating: 0, count: count)
        for d in 0..<count {
            let src = max((Double(d) + 0.5) * scale - 0.5, 0)
            let a = min(Int(src), inSize - 1)
            i0[d] = a
            i1[d] = a < inSize - 1 ? a + 1 : a
            w1[d] = Float(src - Double(a))
        }
        return (i0, i1, w1)
    }

    /// Bilinear resize of a row-major `inH x inW` plane to `outH x outW`, keeping only the
    /// top-left `cropH x cropW` of the output.
    static func resizeBilinear(_ src: UnsafeBufferPointer<Float>, inH: Int, inW: Int, outH: Int, outW: Int,
                               cropH: Int? = nil, cropW: Int? = nil) -> [Float] {
        let ch = cropH ?? outH, cw = cropW ?? outW
        let ys = axisTable(inSize: inH, outSize: outH, count: ch)
        let xs = axisTable(inSize: inW, outSize: outW, count: cw)
        var out = [Float](repeating: 0, count: ch * cw)
        out.withUnsafeMutableBufferPointer { dst in
            for y in 0..<ch {
                let r0 = ys.i0[y] * inW, r1 = ys.i1[y] * inW, wy = ys.w1[y]
                for x in 0..<cw {
                    let x0 = xs.i0[x], x1 = xs.i1[x], wx = xs.w1[x]
                    let top = src[r0 + x0] * (1 - wx) + src[r0 + x1] * wx
                    let bottom = src[r1 + x0] * (1 - wx) + src[r1 + x1] * wx
                    dst[y * cw + x] = top * (1 - wy) + bottom * wy
                }
            }
        }
        return out
    }

    /// One low-res logit plane (m x m) -> logits at the original size, as
    /// ArtifactPredictor.postprocess_masks: m -> S (SxS), crop to the resized image
    /// (inputH x inputW), -> originalH x originalW.
    static func postprocess(lowRes: UnsafeBufferPointer<Float>, lowResSize m: Int, imageSize s: Int,
                            inputH: Int, inputW: Int, originalH: Int, originalW: Int) -> [Float] {
        let cropped = resizeBilinear(lowRes, inH: m, inW: m, outH: s, outW: s, cropH: inputH, cropW: inputW)
        return cropped.withUnsafeBufferPointer {
            resizeBilinear($0, inH: inputH, inW: inputW, outH: originalH, outW: originalW)
        }
    }

    /// A mask as 8-bit grey pixels, row-major: 255 where the logit is above `threshold`, else 0
    /// (the layout of the exported mask PNG and of the golden masks sam-edge writes).
    static func binaryMask(_ logits: [Float], threshold: Float) -> [UInt8] {
        logits.map { $0 > threshold ? 255 : 0 }
    }

    /// {min, p50, p90, mean, std, n} of latencies in ms, with the definitions of
    /// benchmarks.devices.latency_stats (p50 the median, p90 the nearest-rank element with
    /// Python's round-half-to-even, population std).
    static func latencyStats(_ values: [Double]) -> LatencyStats? {
        let ms = values.sorted()
        let n = ms.count
        guard n > 0 else { return nil }
        let mean = ms.reduce(0, +) / Double(n)
        let mid = n / 2
        let p50 = n % 2 == 1 ? ms[mid] : (ms[mid - 1] + ms[mid]) / 2
        let std = n > 1 ? (ms.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(n)).squareRoot() : 0
        let p90Index = min(n - 1, Int((0.9 * Double(n - 1)).rounded(.toNearestOrEven)))
        return LatencyStats(min: ms[0], p50: p50, p90: ms[p90Index], mean: mean, std: std, n: n)
    }
}

struct LatencyStats: Codable, Equatable {
    let min: Double
    let p50: Double
    let p90: Double
    let mean: Double
    let std: Double
    let n: Int
}
