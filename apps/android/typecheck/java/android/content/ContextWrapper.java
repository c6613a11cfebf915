package android.content;
public class ContextWrapper extends Context {
  public java.io.File getFilesDir() { return null; }
  public java.io.File getExternalFilesDir(String type) { return null; }
  public android.content.res.AssetManager getAssets() { return null; }
  public android.content.pm.PackageManager getPackageManager() { return null; }
  public String getPackageName() { return null; }
  public ContentResolver getContentResolver() { return null; }
}
