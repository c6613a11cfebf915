package android.content;
public class Intent {
  public boolean getBooleanExtra(String name, boolean defaultValue) { return false; }
  public int getIntExtra(String name, int defaultValue) { return 0; }
}
