package android.content;
public abstract class Context {
  public abstract java.io.File getFilesDir();
  public abstract java.io.File getExternalFilesDir(String type);
  public abstract android.content.res.AssetManager getAssets();
  public abstract android.content.pm.PackageManager getPackageManager();
  public abstract String getPackageName();
  public abstract ContentResolver getContentResolver();
  public final String getString(int resId) { return null; }
  public final String getString(int resId, Object... formatArgs) { return null; }
}
