/*
 * Part of tailship's scripts/services (not of tailship itself).
 *
 * The integ-test-zip distribution of Elasticsearch 8 that scripts/services runs lacks the rest-root
 * module, so `GET /` and `HEAD /` answer 405 and clients' info() / ping() fail. This plugin answers
 * both with the usual shape (node and cluster name, cluster UUID, version block, tagline).
 * scripts/services compiles it against the distribution's own jars at first start; if that fails
 * the node still starts, without it.
 */
package dev.tailship.services;

import java.util.Collection;
import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

import org.elasticsearch.Build;
import org.elasticsearch.action.ActionListener;
import org.elasticsearch.action.admin.cluster.state.ClusterStateRequest;
import org.elasticsearch.action.admin.cluster.state.ClusterStateResponse;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.xcontent.XContentBuilder;

public class TailshipRootPlugin extends Plugin implements ActionPlugin {

    @Override
    public Collection<RestHandler> getRestHandlers(Settings settings, NamedWriteableRegistry registry,
            RestController controller, ClusterSettings clusterSettings, IndexScopedSettings indexSettings,
            SettingsFilter filter, IndexNameExpressionResolver resolver, Supplier<DiscoveryNodes> nodes,
            Predicate<NodeFeature> features) {
        return List.of(new RootHandler(settings));
    }

    static final class RootHandler extends BaseRestHandler {
        private final String nodeName;
        private final String clusterName;

        RootHandler(Settings settings) {
            this.nodeName = settings.get("node.name", "");
            this.clusterName = settings.get("cluster.name", "elasticsearch");
        }

        @Override
        public String getName() {
            return "tailship_root_info";
        }

        @Override
        public List<Route> routes() {
            return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
        }

        @Override
        protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
            if (request.method() == RestRequest.Method.HEAD) {
                return channel -> channel.sendResponse(new RestResponse(RestStatus.OK, "application/json", ""));
            }
            ClusterStateRequest stateRequest = new ClusterStateRequest().clear().metadata(true);
            return channel -> client.admin().cluster().state(stateRequest, ActionListener.wrap(
                (ClusterStateResponse state) -> {
                    Build build = Build.current();
                    XContentBuilder body = channel.newBuilder();
                    body.startObject();
                    body.field("name", nodeName);
                    body.field("cluster_name", clusterName);
                    body.field("cluster_uuid", state.getState().metadata().clusterUUID());
                    body.startObject("version");
                    body.field("number", build.qualifiedVersion());
                    body.field("build_flavor", build.flavor());
                    body.field("build_type", build.type().displayName());
                    body.field("build_hash", build.hash());
                    body.field("build_date", build.date());
                    body.field("build_snapshot", build.isSnapshot());
                    body.field("lucene_version", org.apache.lucene.util.Version.LATEST.toString());
                    body.field("minimum_wire_compatibility_version", build.minWireCompatVersion());
                    body.field("minimum_index_compatibility_version", build.minIndexCompatVersion());
                    body.endObject();
                    body.field("tagline", "You Know, for Search");
                    body.endObject();
                    channel.sendResponse(new RestResponse(RestStatus.OK, body));
                },
                e -> {
                    try {
                        channel.sendResponse(new RestResponse(channel, e));
                    } catch (java.io.IOException inner) {
                        channel.sendResponse(new RestResponse(RestStatus.INTERNAL_SERVER_ERROR, e.toString()));
                    }
                }));
        }
    }
}
