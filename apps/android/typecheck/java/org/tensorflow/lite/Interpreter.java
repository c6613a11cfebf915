package org.tensorflow.lite;
public final class Interpreter implements AutoCloseable {
  public static class Options { public Options() {} public Options setNumThreads(int numThreads) { return this; } }
  public Interpreter(java.io.File modelFile, Options options) {}
  public String[] getSignatureKeys() { return null; }
  public String[] getSignatureInputs(String signatureKey) { return null; }
  public String[] getSignatureOutputs(String signatureKey) { return null; }
  public Tensor getInputTensorFromSignature(String inputName, String signatureKey) { return null; }
  public Tensor getOutputTensorFromSignature(String outputName, String signatureKey) { return null; }
  public void runSignature(java.util.Map<String, Object> inputs, java.util.Map<String, Object> outputs, String signatureKey) {}
  public void close() {}
}
