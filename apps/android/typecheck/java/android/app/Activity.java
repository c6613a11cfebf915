package android.app;
public class Activity extends android.content.ContextWrapper {
  protected void onCreate(android.os.Bundle savedInstanceState) {}
  protected void onDestroy() {}
  public void setContentView(int layoutResID) {}
  public <T extends android.view.View> T findViewById(int id) { return null; }
  public final void runOnUiThread(Runnable action) {}
  public android.content.Intent getIntent() { return null; }
}
