package org.json;
public class JSONObject {
  public static final Object NULL = new Object();
  public JSONObject() {}
  public JSONObject(java.util.Map copyFrom) {}
  public JSONObject(String json) throws JSONException {}
  public JSONObject put(String name, boolean value) throws JSONException { return this; }
  public JSONObject put(String name, double value) throws JSONException { return this; }
  public JSONObject put(String name, int value) throws JSONException { return this; }
  public JSONObject put(String name, long value) throws JSONException { return this; }
  public JSONObject put(String name, Object value) throws JSONException { return this; }
  public String getString(String name) throws JSONException { return null; }
  public int getInt(String name) throws JSONException { return 0; }
  public double getDouble(String name) throws JSONException { return 0; }
  public JSONArray getJSONArray(String name) throws JSONException { return null; }
  public String toString(int indentSpaces) throws JSONException { return null; }
}
