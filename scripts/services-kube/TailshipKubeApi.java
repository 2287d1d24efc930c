package dev.tailship.services;

import io.fabric8.kubernetes.api.model.GenericKubernetesResource;
import io.fabric8.kubernetes.api.model.HasMetadata;
import io.fabric8.kubernetes.client.server.mock.KubernetesAttributesExtractor;
import io.fabric8.kubernetes.client.server.mock.KubernetesCrudDispatcher;
import io.fabric8.kubernetes.client.server.mock.KubernetesMockServer;
import io.fabric8.kubernetes.client.utils.Serialization;
import io.fabric8.mockwebserver.Context;
import io.fabric8.mockwebserver.MockWebServer;
import io.fabric8.mockwebserver.crud.Attribute;
import io.fabric8.mockwebserver.crud.AttributeSet;
import io.fabric8.mockwebserver.http.MockResponse;
import io.fabric8.mockwebserver.http.RecordedRequest;

import java.lang.reflect.Field;
import java.net.InetAddress;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

/**
 * fabric8's Kubernetes mock server in CRUD mode on loopback, for tailship's tests (scripts/services).
 *
 * Two additions to the stock CRUD dispatcher:
 * - its store indexes only name, namespace and labels, so list and watch would ignore the
 *   spec.nodeName field selector a node agent uses; the attribute extractor here also indexes a
 *   pod's spec.nodeName, so `fieldSelector=spec.nodeName=N` selects the pods of node N;
 * - every request line is journaled, and `GET /tailship/requests` returns the journal (a JSON list
 *   of "METHOD /path?query"; `DELETE` clears it), so a test can count the requests an agent made.
 *
 * Usage: TailshipKubeApi PORT (serves plain HTTP on 127.0.0.1:PORT until killed).
 */
public final class TailshipKubeApi {

  /** The stock extractor plus a pod's spec.nodeName as an attribute. */
  static final class NodeNameExtractor extends KubernetesAttributesExtractor {
    @Override
    public AttributeSet extract(HasMetadata resource) {
      AttributeSet set = super.extract(resource);
      if (resource instanceof GenericKubernetesResource) {
        Object spec = ((GenericKubernetesResource) resource).getAdditionalProperties().get("spec");
        if (spec instanceof Map) {
          Object node = ((Map<?, ?>) spec).get("nodeName");
          if (node instanceof String && !((String) node).isEmpty()) {
            set = set.add(new Attribute("spec.nodeName", (String) node));
          }
        }
      }
      return set;
    }
  }

  /** The CRUD dispatcher with the extractor above and a request journal. */
  static final class Dispatcher extends KubernetesCrudDispatcher {
    private final List<String> journal = new ArrayList<>();

    Dispatcher() throws ReflectiveOperationException {
      super();
      // The stock constructor builds its own extractor and hands it to three places; none takes
      // one from outside, so the launcher swaps it in where it is held.
      NodeNameExtractor extractor = new NodeNameExtractor();
      KubernetesAttributesExtractor old = (KubernetesAttributesExtractor) getAttributeExtractor();
      copyField(KubernetesAttributesExtractor.class, "customResourceDefinitionProcessor", old, extractor);
      setField(io.fabric8.mockwebserver.crud.CrudDispatcher.class, "attributeExtractor", this, extractor);
      setField(KubernetesCrudDispatcher.class, "kubernetesAttributesExtractor", this, extractor);
      Object post = getField(KubernetesCrudDispatcher.class, "postHandler", this);
      setField(post.getClass(), "attributeExtractor", post, extractor);
    }

    @Override
    public MockResponse dispatch(RecordedRequest request) {
      String path = request.getPath();
      if (path.startsWith("/tailship/requests")) {
        synchronized (journal) {
          if ("DELETE".equals(request.getMethod())) {
            journal.clear();
          }
          return new MockResponse().setResponseCode(200).setBody(Serialization.asJson(journal));
        }
      }
      synchronized (journal) {
        journal.add(request.getMethod() + " " + path);
      }
      return super.dispatch(request);
    }
  }

  static Field field(Class<?> owner, String name) throws NoSuchFieldException {
    Field f = owner.getDeclaredField(name);
    f.setAccessible(true);
    return f;
  }

  static Object getField(Class<?> owner, String name, Object target) throws ReflectiveOperationException {
    return field(owner, name).get(target);
  }

  static void setField(Class<?> owner, String name, Object target, Object value) throws ReflectiveOperationException {
    field(owner, name).set(target, value);
  }

  static void copyField(Class<?> owner, String name, Object from, Object to) throws ReflectiveOperationException {
    Field f = field(owner, name);
    f.set(to, f.get(from));
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: TailshipKubeApi PORT");
      System.exit(2);
    }
    int port = Integer.parseInt(args[0]);
    KubernetesMockServer server = new KubernetesMockServer(new Context(Serialization.jsonMapper()),
        new MockWebServer(), new HashMap<>(), new Dispatcher(), false);
    server.start(InetAddress.getByName("127.0.0.1"), port);
    System.out.println("tailship-kube-api: serving on http://127.0.0.1:" + server.getPort());
    System.out.flush();
    new CountDownLatch(1).await();
  }
}
