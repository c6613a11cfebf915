// Core ML twin of sam_edge/runtime/predictor.py (ArtifactPredictor): set an image once (encoder),
// then prompt the decoder with points / a box as often as needed. Every name, shape and
// constant comes from ModelConstants.swift, generated from the export's manifest.json by
// `python -m sam_edge.export.app_constants`.

import CoreGraphics
import CoreML
import Foundation

/// A click in original-image pixels.
struct PointPrompt: Equatable {
    var x: Double
    var y: Double
    var foreground: Bool
}

/// One decoder mask at the original image size.
struct MaskResult {
    let width: Int
    let height: Int
    /// Logits, row-major height x width; the mask is logits > ModelConstants.maskThreshold.
    let logits: [Float]
    let iou: Float
    /// Index into the decoder's low_res_masks (0: single-mask output when maskOutputs == "all").
    let outputIndex: Int
}

enum SamError: LocalizedError {
    case notLoaded
    case unexpectedIO(String)
    case noImage
    case imageConversion
    case badPrompt(String)
    case badOutput(String)

    var errorDescription: String? {
        switch self {
        case .notLoaded: return "the models are not loaded"
        case .unexpectedIO(let what): return "model I/O does not match ModelConstants: \(what) (regenerate ModelConstants.swift)"
        case .noImage: return "set an image before prompting"
        case .imageConversion: return "could not draw the image into an RGB buffer"
        case .badPrompt(let what): return what
        case .badOutput(let what): return "unexpected decoder output: \(what)"
        }
    }
}

final class SamPredictor {
    let encoder: MLModel
    let decoder: MLModel
    let encoderLoadSeconds: Double
    let decoderLoadSeconds: Double
    /// The two packages as checked and compiled by ModelStore (sha256, compile / hash times).
    let prepared: [PreparedModel]

    private(set) var embeddings: MLMultiArray?
    private(set) var originalSize = (height: 0, width: 0)
    private(set) var inputSize = (height: 0, width: 0)

    /// Everything the app checks before the first prediction, each failure one on-screen line:
    /// the constants are for Core ML and the OS is at least ModelConstants.minRuntimeVersion,
    /// Models/encoder_*.mlpackage and decoder_*.mlpackage are in the bundle with the sha256 the
    /// exporter recorded; then each is compiled (first launch only), loaded, and its feature
    /// names are compared with ModelConstants.
    static func load(computeUnits: MLComputeUnits = .all, bundle: Bundle = .main) async throws -> SamPredictor {
        try ModelStore.checkRuntime()
        let enc = try await ModelStore.prepare(ModelConstants.encoderFile, expectedSha256: ModelConstants.encoderSha256,
                                               bundle: bundle)
        let dec = try await ModelStore.prepare(ModelConstants.decoderFile, expectedSha256: ModelConstants.decoderSha256,
                                               bundle: bundle)
        var t0 = DispatchTime.now()
        let encoder = try ModelStore.load(enc, computeUnits: computeUnits)
        let encoderSeconds = seconds(since: t0)
        t0 = DispatchTime.now()
        let decoder = try ModelStore.load(dec, computeUnits: computeUnits)
        let decoderSeconds = seconds(since: t0)
        return try SamPredictor(encoder: encoder, decoder: decoder, encoderLoadSeconds: encoderSeconds,
                                decoderLoadSeconds: decoderSeconds, prepared: [enc, dec])
    }

    init(encoder: MLModel, decoder: MLModel, encoderLoadSeconds: Double, decoderLoadSeconds: Double,
         prepared: [PreparedModel] = []) throws {
        self.encoder = encoder
        self.decoder = decoder
        self.encoderLoadSeconds = encoderLoadSeconds
        self.decoderLoadSeconds = decoderLoadSeconds
        self.prepared = prepared
        try Self.check(encoder, inputs: ModelConstants.encoderInputNames, outputs: ModelConstants.encoderOutputNames)
        try Self.check(decoder, inputs: ModelConstants.decoderInputNames, outputs: ModelConstants.decoderOutputNames)
    }

    static func seconds(since t0: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9
    }

    private static func check(_ model: MLModel, inputs: [String], outputs: [String]) throws {
        let ins = Set(model.modelDescription.inputDescriptionsByName.keys)
        let outs = Set(model.modelDescription.outputDescriptionsByName.keys)
        if ins != Set(inputs) { throw SamError.unexpectedIO("inputs \(ins.sorted()), expected \(inputs)") }
        if !Set(outputs).isSubset(of: outs) { throw SamError.unexpectedIO("outputs \(outs.sorted()), expected \(outputs)") }
    }

    // MARK: - Encoder

    /// RGB image -> encoder input 1 x 3 x S x S float32: ResizeLongestSide, then raw 0...255 pixels
    /// padded bottom-right with the pixel mean (normalizeInside) or normalised + zero-padded.
    func preprocess(_ image: CGImage) throws -> MLMultiArray {
        let s = ModelConstants.imageSize
        let (h, w) = MaskMath.preprocessShape(height: image.height, width: image.width, longSide: s)
        // Resize with Core Graphics (bilinear-ish; PIL's BILINEAR on the host differs by a few
        // 0..255 levels at edges, the same order as JPEG noise).
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { buf in
            guard let space = CGColorSpace(name: CGColorSpace.sRGB),
                  let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8,
                                      bytesPerRow: w * 4, space: space,
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue)
            else { return false }
            ctx.interpolationQuality = .medium
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { throw SamError.imageConversion }

        let spec = ModelConstants.encoderInputs[0]
        let array = try MLMultiArray(shape: spec.shape.map { NSNumber(value: $0) }, dataType: .float32)
        let mean = ModelConstants.pixelMean, std = ModelConstants.pixelStd
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { ptr, strides in
            let cs = strides[1], ys = strides[2], xs = strides[3]
            for c in 0..<3 {
                let pad: Float = ModelConstants.normalizeInside ? mean[c] : 0
                for y in 0..<s {
                    for x in 0..<s {
                        var v = pad
                        if y < h && x < w {
                            let raw = Float(rgba[(y * w + x) * 4 + c])
                            v = ModelConstants.normalizeInside ? raw : (raw - mean[c]) / std[c]
                        }
                        ptr[c * cs + y * ys + x * xs] = v
                    }
                }
            }
        }
        inputSize = (h, w)
        return array
    }

    /// Runs the encoder once per image; prompts then only run the (small) decoder.
    func setImage(_ image: CGImage) throws {
        embeddings = nil
        let input = try preprocess(image)
        let feed = try MLDictionaryFeatureProvider(dictionary: [
            ModelConstants.encoderInputNames[0]: MLFeatureValue(multiArray: input),
        ])
        let out = try encoder.prediction(from: feed)
        guard let emb = out.featureValue(for: ModelConstants.encoderOutputNames[0])?.multiArrayValue else {
            throw SamError.badOutput("no \(ModelConstants.encoderOutputNames[0])")
        }
        embeddings = emb
        originalSize = (image.height, image.width)
    }

    // MARK: - Decoder

    /// Point / box prompt in original pixels -> (point_coords 1 x N x 2, point_labels 1 x N) in the
    /// model frame: box corners labelled 2 / 3; without a box one (0, 0) point labelled -1;
    /// a fixed-slot decoder (TFLite-style) padded with padLabel.
    func pointInputs(points: [PointPrompt], box: CGRect?) throws -> (coords: [Float], labels: [Float]) {
        let maxPoints = ModelConstants.fixedPointSlots ?? (ModelConstants.pointsMax > 0 ? ModelConstants.pointsMax : SamPredictor.maxPoints)
        if let problem = SamPredictor.promptRuleError(numPoints: points.count, box: box, maxPoints: maxPoints) {
            throw SamError.badPrompt(problem)
        }
        var coords: [Float] = []
        var labels: [Float] = []
        let (oh, ow) = originalSize
        let s = ModelConstants.imageSize
        for p in points {
            let m = MaskMath.toModelFrame(x: p.x, y: p.y, originalHeight: oh, originalWidth: ow, longSide: s)
            coords += [m.x, m.y]
            labels.append(p.foreground ? ModelConstants.labelForeground : ModelConstants.labelBackground)
        }
        if let box {
            let a = MaskMath.toModelFrame(x: box.minX, y: box.minY, originalHeight: oh, originalWidth: ow, longSide: s)
            let b = MaskMath.toModelFrame(x: box.maxX, y: box.maxY, originalHeight: oh, originalWidth: ow, longSide: s)
            coords += [a.x, a.y, b.x, b.y]
            labels += [ModelConstants.labelBoxTopLeft, ModelConstants.labelBoxBottomRight]
        } else {
            coords += [0, 0]
            labels.append(ModelConstants.labelNotAPoint)
        }
        if let slots = ModelConstants.fixedPointSlots {
            while labels.count < slots {
                coords += [0, 0]
                labels.append(ModelConstants.padLabel)
            }
        }
        return (coords, labels)
    }

    /// The prompt rule, the same in every runtime (sam_edge/predictor.py prompt_rule_error,
    /// apps/web/prompt_rule.js, the Android sample), word for word: the decoder takes at most
    /// maxPoints point rows, a box fills 2 of them and a prompt without a box 1 padding row; a box
    /// needs a width and a height. nil when the prompt is usable.
    static let maxPoints = 64

    static func promptRuleError(numPoints: Int, box: CGRect?, maxPoints: Int) -> String? {
        if let box {
            let b = [box.minX, box.minY, box.maxX, box.maxY].map { Double($0) }
            if b[2] == b[0] || b[3] == b[1] {
                let text = b.map { $0 == $0.rounded() && abs($0) < 1e15 ? String(Int64($0)) : String($0) }
                return "box [\(text.joined(separator: ", "))] has zero width or height (x0 == x1 or y0 == y1)"
            }
        }
        let limit = maxPoints - (box == nil ? 1 : 2)
        if numPoints > limit {
            return "point_coords: \(numPoints) points, at most \(limit) \(box == nil ? "without" : "with") a box " +
                "(max_points=\(maxPoints) decoder point rows: a box fills 2, no box 1 padding row)"
        }
        return nil
    }

    static func floatArray(_ values: [Float], shape: [Int]) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: shape.map { NSNumber(value: $0) }, dataType: .float32)
        array.withUnsafeMutableBufferPointer(ofType: Float.self) { ptr, _ in
            // freshly created arrays are contiguous row-major
            for (i, v) in values.enumerated() { ptr[i] = v }
        }
        return array
    }

    /// Raw decoder run on model-frame inputs -> (low_res_masks scalars, shape), iou_predictions.
    func decode(coords: [Float], labels: [Float]) throws -> (lowRes: MLShapedArray<Float>, iou: [Float]) {
        guard let embeddings else { throw SamError.noImage }
        let names = ModelConstants.decoderInputNames
        let m = ModelConstants.maskInputSize
        let n = labels.count
        let feed = try MLDictionaryFeatureProvider(dictionary: [
            names[0]: MLFeatureValue(multiArray: embeddings),
            names[1]: MLFeatureValue(multiArray: try Self.floatArray(coords, shape: [1, n, 2])),
            names[2]: MLFeatureValue(multiArray: try Self.floatArray(labels, shape: [1, n])),
            names[3]: MLFeatureValue(multiArray: try Self.floatArray([Float](repeating: 0, count: m * m),
                                                                     shape: [1, 1, m, m])),
            names[4]: MLFeatureValue(multiArray: try Self.floatArray([0], shape: [1])),
        ])
        let out = try decoder.prediction(from: feed)
        let outNames = ModelConstants.decoderOutputNames
        guard let masks = out.featureValue(for: outNames[0])?.multiArrayValue,
              let iou = out.featureValue(for: outNames[1])?.multiArrayValue
        else { throw SamError.badOutput("missing \(outNames)") }
        let lowRes = MLShapedArray<Float>(converting: masks)
        let expected = [1, ModelConstants.numMaskOutputs, m, m]
        guard lowRes.shape == expected else { throw SamError.badOutput("low_res_masks shape \(lowRes.shape), expected \(expected)") }
        return (lowRes, MLShapedArray<Float>(converting: iou).scalars)
    }

    /// Prompts in original pixels -> masks at the original size: the 3 multimask outputs
    /// (multimask) or the single-mask output, as ArtifactPredictor.predict.
    func predict(points: [PointPrompt], box: CGRect? = nil, multimask: Bool = true) throws -> [MaskResult] {
        let (coords, labels) = try pointInputs(points: points, box: box)
        let (lowRes, iou) = try decode(coords: coords, labels: labels)
        let useMulti = (multimask && !ModelConstants.multimaskIndices.isEmpty) || ModelConstants.singleMaskIndex < 0
        let indices = useMulti ? ModelConstants.multimaskIndices : [ModelConstants.singleMaskIndex]
        let m = ModelConstants.maskInputSize
        let scalars = lowRes.scalars
        return scalars.withUnsafeBufferPointer { all in
            indices.map { k in
                let plane = UnsafeBufferPointer(rebasing: all[(k * m * m)..<((k + 1) * m * m)])
                let logits = MaskMath.postprocess(lowRes: plane, lowResSize: m, imageSize: ModelConstants.imageSize,
                                                  inputH: inputSize.height, inputW: inputSize.width,
                                                  originalH: originalSize.height, originalW: originalSize.width)
                return MaskResult(width: originalSize.width, height: originalSize.height, logits: logits,
                                  iou: iou[k], outputIndex: k)
            }
        }
    }
}
