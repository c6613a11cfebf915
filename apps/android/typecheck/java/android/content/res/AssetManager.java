package android.content.res;
public final class AssetManager implements AutoCloseable {
  public java.io.InputStream open(String fileName) throws java.io.IOException { return null; }
  public String[] list(String path) throws java.io.IOException { return null; }
  public AssetFileDescriptor openFd(String fileName) throws java.io.IOException { return null; }
  public void close() {}
}
